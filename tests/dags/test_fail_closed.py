"""Fail closed under ``dag.test()``: the lease comes back whatever fails after preflight; bad inputs never load.

Airflow skips a teardown whose setups all failed, so with provisioning as the
only setup a failed provisioning (or cost check) kept the target's lease, and
any half-started cloud workers, until they expired. ``lease_held`` is a setup of
the teardown too (see ``stampede.surfaces.airflow_tasks``).
"""

from __future__ import annotations

import pytest

from stampede.infra.canary import Canary
from stampede.plan.run_plan import run_tag_for
from stampede.safety import lease
from stampede.state import tags

pytestmark = pytest.mark.integration


def _states(run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in run.get_task_instances()}


def _ecs_tasks_of(run_id: str) -> list[str]:
    import boto3

    ecs = boto3.client("ecs")
    arns = ecs.list_tasks(cluster="stampede-workers", desiredStatus="RUNNING")["taskArns"]
    described = ecs.describe_tasks(cluster="stampede-workers", tasks=arns, include=["TAGS"])["tasks"] if arns else []
    return [t["taskArn"] for t in described if {"key": "stampede:run_id", "value": run_id} in t.get("tags", [])]


def test_a_failed_provisioning_still_tears_down_and_gives_the_lease_back(airflow_db, dag_bag, aws, monkeypatch):
    monkeypatch.setenv("STAMPEDE_ECS_TASK_DEFINITION", "no-such-task-definition")  # ECS refuses to start workers
    dag = dag_bag.dags["loadtest_nightly"]
    with Canary() as canary:
        run = dag.test(run_conf={"scenarios": ["smoke"], "environment": "local", "target": canary.base_url,
                                 "worker_provider": "ecs", "workers": 2})
        assert canary.hits(exclude_health=True) == 0
        holder = lease.holder(canary.base_url)
    states = _states(run)
    assert states["preflight"] == "success" and states["lease_held"] == "success"
    assert states["provision_workers"] == "failed"
    assert states["teardown_workers"] == "success"  # ran although provisioning failed
    assert states["final_verdict"] == "failed" and run.state == "failed"
    assert holder is None  # the lease is back: the next run may start
    assert run_tag_for(run.run_id, "loadtest_nightly") in tags.issued(ended=True)
    assert _ecs_tasks_of(run.run_id) == []


def test_a_refused_cost_check_gives_the_lease_back(airflow_db, dag_bag, aws, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_STAMPEDE_BUDGET_RUN_USD", "0.0000001")
    dag = dag_bag.dags["loadtest_nightly"]
    with Canary() as canary:
        run = dag.test(run_conf={"scenarios": ["smoke"], "environment": "local", "target": canary.base_url,
                                 "worker_provider": "ecs", "workers": 2})
        assert canary.hits(exclude_health=True) == 0
        holder = lease.holder(canary.base_url)
    states = _states(run)
    assert states["cost_check"] == "failed" and states["provision_workers"] == "upstream_failed"
    assert states["teardown_workers"] == "success" and run.state == "failed"
    assert holder is None
    assert _ecs_tasks_of(run.run_id) == []


@pytest.mark.parametrize("budget", ["nan", "-5", "lots"])
def test_a_budget_that_is_not_a_number_of_dollars_refuses_the_run(airflow_db, dag_bag, aws, monkeypatch, budget):
    """A "nan" budget would pass every comparison: it is refused, and nothing starts."""
    monkeypatch.setenv("AIRFLOW_VAR_STAMPEDE_BUDGET_RUN_USD", budget)
    with Canary() as canary:
        run = dag_bag.dags["loadtest_nightly"].test(run_conf={
            "scenarios": ["smoke"], "environment": "local", "target": canary.base_url, "worker_provider": "ecs",
            "workers": 2})
        assert canary.hits(exclude_health=True) == 0 and lease.holder(canary.base_url) is None
    assert _states(run)["cost_check"] == "failed" and run.state == "failed"


def test_the_kill_switch_variable_in_the_metadata_db_refuses_the_run(airflow_db, dag_bag, monkeypatch):
    """The Variable read through the task API (not an env var): set, it refuses; the run sends nothing."""
    from airflow.models import Variable

    monkeypatch.delenv("AIRFLOW_VAR_STAMPEDE_KILL_SWITCH", raising=False)
    Variable.set("stampede_kill_switch", "incident 99: database failover")
    try:
        with Canary() as canary:
            run = dag_bag.dags["loadtest_nightly"].test(run_conf={
                "scenarios": ["smoke"], "environment": "local", "target": canary.base_url, "workers": 0})
            assert canary.hits() == 0
    finally:
        Variable.delete("stampede_kill_switch")
    assert _states(run)["preflight"] == "failed" and run.state == "failed"


@pytest.mark.parametrize("scenario", ["../scenarios/smoke", "/etc/hostname", "smoke.yaml", "tests/x.yaml"])
def test_a_scenario_from_the_run_conf_is_a_name_never_a_path(airflow_db, dag_bag, scenario):
    with Canary() as canary:
        run = dag_bag.dags["loadtest_nightly"].test(run_conf={
            "scenarios": [scenario], "environment": "local", "target": canary.base_url, "workers": 0})
        assert canary.hits() == 0
    assert _states(run)["preflight"] == "failed" and run.state == "failed"
