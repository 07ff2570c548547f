"""``loadtest_nightly`` end to end under ``dag.test()``: real Locust, real demo target, real Slack client.

The run conf swaps the nightly scenarios for the tiny smoke scenario and the
staging target for a demo target on a free loopback port.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from stampede.infra.demo_target.server import DemoTarget

pytestmark = pytest.mark.integration

TOKEN = "xoxb-e2e-secret-token"  # the slack fixture's (tests/dags/conftest.py)


def _tagged_left(target: DemoTarget, run_tag: str, password: str) -> int:
    token = httpx.post(f"{target.base_url}/auth/login",
                       json={"email": "admin@demo.stampede.local", "password": password}).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    return sum(
        httpx.get(f"{target.base_url}/{kind}", params={"search": run_tag, "limit": 1}, headers=headers).json()["total"]
        for kind in ("escrows", "listings")
    )


def test_nightly_dag_runs_every_task_and_leaves_nothing_behind(airflow_db, dag_bag, demo_target, slack, caplog):
    import os

    dag = dag_bag.dags["loadtest_nightly"]
    run = dag.test(run_conf={
        "scenarios": ["smoke"], "environment": "local", "target": demo_target.base_url, "workers": 1,
    })

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {task.task_id: "success" for task in dag.tasks}, states
    assert run.state == "success"

    results_files = list(Path(os.environ["STAMPEDE_REPORTS_DIR"]).glob("*/results.json"))
    results = next(json.loads(p.read_text()) for p in results_files if json.loads(p.read_text())["run_id"] == run.run_id)
    assert results["verdict"] == "pass"
    assert results["stages"][0]["requests"] > 0 and results["stages"][0]["p95_ms"] is not None
    cleanup = results["cleanup"]
    assert cleanup["left"] == 0 and cleanup["ok"] and cleanup["proof"] == "search"
    assert cleanup["created"] > 0 and cleanup["deleted"] > 0  # from the ledger; the admin's own deletes are already gone
    assert Path(results["report_path"]).exists()
    assert _tagged_left(demo_target, results["run_tag"], os.environ["STAMPEDE_TARGET_PASSWORD"]) == 0

    texts = [m.get("text", "") for m in slack.messages()]
    assert any(results["run_tag"] in t or run.run_id in t for t in texts)
    assert any("PASS" in t.upper() and "smoke" in t for t in texts), texts
    assert {slack.channel_id(m["channel"]) for m in slack.messages()} == {slack.channel_id("#loadtests")}
    assert TOKEN not in caplog.text

    # the morning report's extras: the main chart reached Slack, and the report task links to the report
    charts = [f for f in slack.files() if f["filename"] == "load.png"]
    assert charts and charts[-1]["completed"] and slack.file_bytes(charts[-1]["file_id"])[:4] == b"\x89PNG"
    # the report task, and it alone, links to the report's page in Airflow (resolved as the API server does)
    from airflow.serialization.serialized_objects import DagSerialization

    from stampede.surfaces.report_link import LINK_NAME, report_page_path

    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    keys = {ti.task_id: ti.key for ti in run.get_task_instances()}
    link = serialized.get_task("report").operator_extra_link_dict[LINK_NAME]
    assert link.get_link(serialized.get_task("report"), ti_key=keys["report"]).endswith(
        report_page_path("loadtest_nightly", run.run_id))
    assert LINK_NAME not in (serialized.get_task("validate").operator_extra_link_dict or {})
