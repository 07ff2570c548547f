"""The report inside Airflow: the plugin's page behind the API server's auth, and the link on the report task only.

The API server is Airflow's own app (``create_app("core")``) on this session's
migrated metadata DB, with the DAGs serialized into it and a real DAG run made
through the REST API; the report is read from the run's folder, locally and
from object storage (moto's S3 through the AWS connection).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from stampede.core import artifacts
from stampede.core.artifacts import RunFolder
from stampede.core.paths import Artifact

REPORT = "<!doctype html><html><body><h1>Load test report</h1><svg><rect/></svg></body></html>"


@pytest.fixture(scope="module")
def api(airflow_db):
    # a key of 64 bytes: PyJWT warns (an error under this suite's filterwarnings) about shorter ones
    jwt_secret = os.environ.setdefault("AIRFLOW__API_AUTH__JWT_SECRET", secrets.token_hex(64))
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "dags", "reserialize"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    from fastapi.testclient import TestClient

    from airflow.api_fastapi.app import create_app, get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    client = TestClient(create_app("core"))
    manager = get_auth_manager()
    tokens = {role: manager.generate_jwt(SimpleAuthManagerUser(username=f"u-{role}", role=role))
              for role in ("admin", "viewer", None)}
    admin = {"Authorization": f"Bearer {tokens['admin']}"}
    run = client.post("/api/v2/dags/loadtest_manual/dagRuns", headers=admin, json={"logical_date": None})
    assert run.status_code == 200, run.text
    yield client, tokens, run.json()["dag_run_id"]
    if os.environ.get("AIRFLOW__API_AUTH__JWT_SECRET") == jwt_secret:
        del os.environ["AIRFLOW__API_AUTH__JWT_SECRET"]


def _get(client, token, dag_id, run_id):
    from stampede.surfaces.report_link import report_page_path

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(report_page_path(dag_id, run_id), headers=headers)


@pytest.mark.integration
def test_the_page_serves_the_runs_offline_report_to_whoever_may_read_the_run(api, monkeypatch):
    from stampede.steps.folder import folder_for_run

    client, tokens, run_id = api
    monkeypatch.delenv(artifacts.ENV_STORE, raising=False)
    folder = folder_for_run(run_id, dag_id="loadtest_manual")
    assert _get(client, tokens["viewer"], "loadtest_manual", run_id).status_code == 404  # no report yet
    folder.file(Artifact.REPORT).write_text(REPORT)
    page = _get(client, tokens["viewer"], "loadtest_manual", run_id)
    assert page.status_code == 200 and page.text == REPORT  # the same offline HTML, byte for byte
    client.cookies.set("_token", tokens["viewer"])  # the UI's cookie: how the tab's iframe and the link reach it
    assert _get(client, None, "loadtest_manual", run_id).text == REPORT
    client.cookies.clear()


@pytest.mark.integration
def test_no_login_no_permission_or_another_dags_run_sees_nothing(api):
    client, tokens, run_id = api
    assert _get(client, None, "loadtest_manual", run_id).status_code == 401
    assert _get(client, tokens[None], "loadtest_manual", run_id).status_code == 403
    other = _get(client, tokens["viewer"], "loadtest_nightly", run_id)  # allowed on nightly, but not its run
    assert other.status_code == 404 and REPORT not in other.text


@pytest.mark.integration
def test_the_report_comes_from_object_storage_when_one_is_configured(api, moto_server, monkeypatch, tmp_path):
    from stampede.steps.folder import folder_for_run

    client, tokens, run_id = api
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": moto_server.endpoint_url, "region_name": "us-east-1"}}))
    monkeypatch.setenv(artifacts.ENV_STORE, "s3://stampede-plugin-test/runs")
    monkeypatch.setenv("STAMPEDE_REPORTS_DIR", str(tmp_path / "api-server-host"))  # nothing on this host's disk
    boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="stampede-plugin-test")
    written_elsewhere = RunFolder(tmp_path / "worker-host", folder_for_run(run_id, dag_id="loadtest_manual").store)  # the report task's host
    written_elsewhere.write_text(Artifact.REPORT, REPORT + "<!-- s3 -->")
    assert not (tmp_path / "api-server-host").exists() or not any((tmp_path / "api-server-host").rglob("report.html"))
    assert _get(client, tokens["viewer"], "loadtest_manual", run_id).text == REPORT + "<!-- s3 -->"
    monkeypatch.setenv(artifacts.ENV_STORE, "s3://no-such-bucket-here/runs")
    assert _get(client, tokens["viewer"], "loadtest_manual", run_id).status_code in (404, 503)


@pytest.mark.integration
def test_the_plugin_adds_a_tab_to_the_dag_run_page(api):
    client, tokens, _ = api
    plugins = client.get("/api/v2/plugins", headers={"Authorization": f"Bearer {tokens['admin']}"}).json()["plugins"]
    (ours,) = [p for p in plugins if p["name"] == "stampede_reports"]
    (view,) = ours["external_views"]
    assert view["destination"] == "dag_run" and view["url_route"] and view["href"].startswith("/stampede/reports/")


def test_the_report_link_is_an_http_link_on_the_report_task_alone(dag_bag):
    from airflow.serialization.serialized_objects import DagSerialization

    from stampede.surfaces.report_link import LINK_NAME, report_page_url

    for dag_id in ("loadtest_manual", "loadtest_nightly", "loadtest_breaking_point"):
        dag = DagSerialization.from_dict(DagSerialization.to_dict(dag_bag.dags[dag_id]))
        with_link = sorted(t.task_id for t in dag.tasks if LINK_NAME in (t.operator_extra_link_dict or {}))
        assert with_link == ["report"], dag_id
    url = report_page_url("loadtest_manual", "manual__2026-01-01T00:00:00+00:00", base_url="http://127.0.0.1:8080/")
    assert url == "http://127.0.0.1:8080/stampede/reports/loadtest_manual/manual__2026-01-01T00%3A00%3A00%2B00%3A00"
    assert os.environ.get("AIRFLOW__API__BASE_URL") is None or url.startswith("http")
