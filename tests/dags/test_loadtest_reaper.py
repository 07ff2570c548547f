"""The reaper DAG: hourly, no catch-up, one task that calls the plain reaping function."""

from __future__ import annotations

import json

import httpx
import pytest

from stampede.infra.demo_target.server import DemoTarget
from stampede.plan.run_plan import DEFAULT_ACCOUNTS
from stampede.state import tags

ADMIN = DEFAULT_ACCOUNTS["admin"]


def test_reaper_schedule_and_structure(dag_bag):
    dag = dag_bag.dags["loadtest_reaper"]
    assert dag.catchup is False and dag.max_active_runs == 1
    assert dag.timetable.expression == "0 * * * *"  # @hourly
    assert {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks} == {"reap": []}
    assert dag.params["older_than_s"] == 6 * 3600 and dag.params["reaper_targets"] == []
    assert "LT-" in dag.doc_md and "reaper_targets" in dag.doc_md
    assert dag.get_task("reap").retries == 2


@pytest.mark.integration
def test_reaper_dag_removes_stale_data_under_dag_test(airflow_db, dag_bag, tmp_path, monkeypatch):
    """End to end: the environments Variable, read when the task runs, narrows the file (staging off here)."""
    monkeypatch.setenv("AIRFLOW_VAR_STAMPEDE_ENVIRONMENTS", json.dumps({"environments": {"staging": {"allow_load": False}}}))
    with DemoTarget(workdir=tmp_path / "target") as target:
        client = httpx.Client(base_url=target.base_url, trust_env=False, follow_redirects=False, timeout=10)
        token = client.post("/auth/login", json={"email": ADMIN, "password": target.password}).json()["token"]
        client.headers["Authorization"] = f"Bearer {token}"
        tags.issue("LT-crashedrun9", run_id="crashedrun9", target=target.base_url)  # a run that died...
        tags.end("LT-crashedrun9")  # ...and is over: the reaper may clean up after it
        for i in range(3):
            assert client.post("/listings", json={"address": f"{i} Elm St LT-crashedrun9", "list_price": 1000}).status_code == 201
        for address in ("1 Keep Lane", "2 Elm St LT-neverissued8", "Gedimino pr. 9, LT-01103 Vilnius"):
            assert client.post("/listings", json={"address": address, "list_price": 1000}).status_code == 201

        run = dag_bag.dags["loadtest_reaper"].test(run_conf={"older_than_s": 0, "reaper_targets": [target.base_url]})

        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        left = [item["address"] for item in client.get("/listings", params={"limit": 100}).json()["items"]]
        client.close()
    assert states == {"reap": "success"} and run.state == "success"
    assert sorted(left) == ["1 Keep Lane", "2 Elm St LT-neverissued8", "Gedimino pr. 9, LT-01103 Vilnius"]
