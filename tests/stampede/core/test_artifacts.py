"""The artifact store: a run folder in a local folder, or in object storage that two hosts share.

Object storage is moto's S3 server reached through an Airflow connection
(``AIRFLOW_CONN_AWS_DEFAULT`` with an ``endpoint_url``), as a deployment reaches
its bucket; the two "hosts" are two local scratch folders that share nothing.
"""

from __future__ import annotations

import json

import boto3
import pytest

from stampede.core import artifacts
from stampede.core.artifacts import RunFolder
from stampede.core.errors import Refusal
from stampede.core.paths import Artifact
from stampede.core.records import RunResult

BUCKET = "stampede-artifacts"


@pytest.fixture
def bucket(moto_server, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": moto_server.endpoint_url, "region_name": "us-east-1"},
    }))
    monkeypatch.setenv(artifacts.ENV_STORE, f"s3://{BUCKET}/runs")
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket=BUCKET)
    yield s3
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket=BUCKET, Key=item["Key"])
    s3.delete_bucket(Bucket=BUCKET)


def _hosts(tmp_path):
    store = artifacts.store_root() / "LT-run1"
    return RunFolder(tmp_path / "host-a" / "LT-run1", store), RunFolder(tmp_path / "host-b" / "LT-run1", store)


def _keys(s3) -> list[str]:
    return sorted(o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", []))


@pytest.mark.integration
def test_what_one_host_writes_another_host_reads(bucket, tmp_path):
    host_a, host_b = _hosts(tmp_path)
    host_a.write_json(Artifact.COST_ESTIMATE, {"estimate_usd": 1.5})
    host_a.write_results(RunResult(run_id="r1", scenario="smoke", target="http://127.0.0.1:9/v1", verdict="pass",
                                   started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:01:00+00:00",
                                   stages=[]))
    assert not (host_b.path / Artifact.COST_ESTIMATE).exists()  # nothing shared on disk
    assert host_b.exists(Artifact.COST_ESTIMATE) and host_b.read_json(Artifact.COST_ESTIMATE) == {"estimate_usd": 1.5}
    assert host_b.results().run_id == "r1"
    assert host_b.read_json(Artifact.TEARDOWN, default="none") == "none"
    assert _keys(bucket) == ["runs/LT-run1/cost_estimate.json", "runs/LT-run1/results.json"]


@pytest.mark.integration
def test_files_a_tool_wrote_itself_are_published_and_fetched_whole(bucket, tmp_path):
    host_a, host_b = _hosts(tmp_path)
    host_a.file(f"{Artifact.CHARTS}/load.png").write_bytes(b"\x89PNG" + bytes(range(256)) * 8192)  # 2 MiB: > 1 chunk
    host_a.file(f"{Artifact.CHARTS}/latency.png").write_bytes(b"\x89PNG")
    host_a.file(Artifact.LOCUST_OUTPUT).write_text('{"stages": []}')
    assert not host_b.exists(Artifact.LOCUST_OUTPUT)  # not published yet: the store knows nothing of it
    host_a.publish(Artifact.CHARTS)
    host_a.publish(Artifact.LOCUST_OUTPUT)
    host_a.publish(Artifact.MASTER_LOG)  # a tool that wrote nothing: not an error
    charts = host_b.fetch(Artifact.CHARTS)
    assert sorted(p.name for p in charts.iterdir()) == ["latency.png", "load.png"]
    assert (charts / "load.png").read_bytes() == (host_a.path / Artifact.CHARTS / "load.png").read_bytes()
    assert host_b.read_json(Artifact.LOCUST_OUTPUT) == {"stages": []}
    assert not host_b.fetch("missing.json").exists()


@pytest.mark.integration
def test_a_removed_artifact_is_gone_for_every_host(bucket, tmp_path):
    host_a, host_b = _hosts(tmp_path)
    host_a.write_text(Artifact.TEARDOWN, "{}")
    host_b.remove(Artifact.TEARDOWN)
    assert not host_a.exists(Artifact.TEARDOWN) and _keys(bucket) == []


@pytest.mark.integration
def test_addresses_for_people_carry_no_connection_id(bucket, tmp_path):
    host_a, _ = _hosts(tmp_path)
    assert host_a.uri(Artifact.REPORT) == f"s3://{BUCKET}/runs/LT-run1/report.html"
    assert host_a.sub("steps/01").uri() == f"s3://{BUCKET}/runs/LT-run1/steps/01"
    assert "aws_default" not in repr(host_a)


def test_without_a_store_the_run_folder_is_the_local_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(artifacts.ENV_STORE, raising=False)
    assert artifacts.store_root() is None
    folder = RunFolder(tmp_path / "run")
    folder.write_json(Artifact.COST, {"actual_usd": 0})
    folder.file(Artifact.REPORT).write_text("<html>")
    folder.publish(Artifact.REPORT)  # nothing to do
    assert folder.fetch(Artifact.REPORT) == tmp_path / "run" / "report.html"
    assert folder.uri(Artifact.COST) == str(tmp_path / "run" / "cost.json") and folder.read_json(Artifact.COST) == {"actual_usd": 0}
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["cost.json", "report.html"]  # no temp files left


@pytest.mark.parametrize("url", ["file:///tmp/x", "s3://", "bucket/prefix", "s3://aws_default@bucket/x"])
def test_a_store_that_is_not_s3_bucket_prefix_is_refused_in_one_line(url, monkeypatch):
    monkeypatch.setenv(artifacts.ENV_STORE, url)
    with pytest.raises(Refusal, match=r"^STAMPEDE_ARTIFACTS_URL: .* is not s3://bucket/prefix; fix: "):
        artifacts.store_url()


def test_a_document_read_for_some_keys_holds_those_it_has_and_nothing_else(tmp_path, monkeypatch):
    monkeypatch.delenv(artifacts.ENV_STORE, raising=False)
    folder = RunFolder(tmp_path / "run")
    folder.write_json(Artifact.LOCUST_OUTPUT, {"stages": [{"name": "soak"}], "series": [{"t": 1}] * 3, "phases": {}})
    assert folder.read_json(Artifact.LOCUST_OUTPUT, keys=("stages", "phases", "intervals")) == {
        "stages": [{"name": "soak"}], "phases": {}}
    folder.write_text(Artifact.SERVER_METRICS, '{"series": {}, "interval_s": NaN}')  # json writes NaN, msgspec refuses it
    assert folder.read_json(Artifact.SERVER_METRICS, keys=("series",)) == {"series": {}}


def test_results_read_back_as_written_whatever_their_series_rows_hold(tmp_path, monkeypatch):
    monkeypatch.delenv(artifacts.ENV_STORE, raising=False)
    folder = RunFolder(tmp_path / "run")
    row = {"t": 1, "stage": "soak", "phase": "steady", "users": 5, "requests": 3, "failures": 0,
           "p50_ms": 2.5, "p95_ms": 4.0, "p99_ms": None}
    folder.write_results(RunResult.from_dict({"run_id": "r1", "scenario": "smoke", "target": "t", "verdict": "pass",
                                              "started_at": "", "finished_at": "", "stages": [],
                                              "series": [row, {**row, "t": 2, "step": 1}]}))
    written = json.loads(folder.file(Artifact.RESULTS).read_text())
    assert folder.results().to_dict() == written
    # a row missing a field (an older writer) or one this reader does not know: still read, as before
    written["series"] = [{k: v for k, v in row.items() if k != "users"}, {**row, "t": 2, "extra": 1}]
    folder.file(Artifact.RESULTS).write_text(json.dumps(written))
    series = folder.results().series
    assert [(p.t, p.users) for p in series] == [(1, None), (2, 5)]


def test_a_long_runs_results_are_written_compact_row_for_row_as_their_dicts(tmp_path, monkeypatch):
    from stampede.core.records import LONG_SERIES, dumps_compact

    monkeypatch.delenv(artifacts.ENV_STORE, raising=False)
    folder = RunFolder(tmp_path / "run")
    rows = [{"t": t, "stage": 'a "quoted",\\ stage', "phase": "steady", "users": t % 7, "requests": 3, "failures": 0,
             "p50_ms": None if t % 5 else 2.5, "p95_ms": 4.0, "p99_ms": None, **({"step": t % 3} if t % 2 else {})}
            for t in range(LONG_SERIES + 10)]
    result = RunResult.from_dict({"run_id": "r1", "scenario": "soak", "target": "t", "verdict": "pass",
                                  "started_at": "", "finished_at": "", "stages": [], "series": rows})
    folder.write_results(result)
    assert folder.file(Artifact.RESULTS).read_bytes() == dumps_compact(result.to_dict())
    assert folder.results() == result
