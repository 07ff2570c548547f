"""The Airflow kill switch: with the Variable set, the nightly DAG's preflight refuses and no request is sent."""

from __future__ import annotations

import pytest

from stampede.infra.canary import Canary

pytestmark = pytest.mark.integration


def test_kill_switch_variable_refuses_the_dag_run_with_zero_requests(airflow_db, dag_bag, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_STAMPEDE_KILL_SWITCH", "change freeze until Monday")
    with Canary() as canary:
        dag = dag_bag.dags["loadtest_nightly"]
        run = dag.test(run_conf={"scenarios": ["smoke"], "environment": "local", "target": canary.base_url, "workers": 0})
        assert canary.hits() == 0
    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["preflight"] == "failed" and states["run_stages"] != "success"
    assert run.state == "failed"
