"""``loadtest_nightly`` under ``dag.test()`` with the ``ecs`` worker provider, against moto's server.

What runs for real: the DAG and every task, the Airflow AWS connection (pointing
at moto), boto3 calls that start, tag, stop and verify ECS tasks (the stack
deployed from infra/aws/workers.cfn.yaml), the cost estimate and budget check,
Locust, the demo target, Slack. What moto cannot do: run the worker image, so
local agent processes stand in as the load generators
(STAMPEDE_CLOUD_WORKERS_STANDIN=local) while moto's tasks are the cloud side.
One task is stopped mid-run (as a spot interruption would), and afterwards
nothing tagged with the run id may be running.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import boto3
import pytest


pytestmark = pytest.mark.integration

TOKEN = "xoxb-e2e-secret-token"  # the slack fixture's (tests/dags/conftest.py)
AWS_SECRET = "moto-secret-key-e2e"
RUN_TAG_KEY = "stampede:run_id"


@pytest.fixture
def aws_connection(aws, monkeypatch):
    """Credentials, region and endpoint from the Airflow connection aws_default, as in production."""
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": AWS_SECRET,
        "extra": {"region_name": "us-east-1", "endpoint_url": aws.endpoint_url},
    }))
    return aws


def _ecs():
    return boto3.client("ecs")


def _run_tasks(run_id: str | None = None) -> list[dict]:
    arns = _ecs().list_tasks(cluster="stampede-workers", desiredStatus="RUNNING")["taskArns"]
    tasks = _ecs().describe_tasks(cluster="stampede-workers", tasks=arns, include=["TAGS"])["tasks"] if arns else []
    found = []
    for task in tasks:
        tags = {t["key"]: t["value"] for t in task.get("tags", [])}
        if task["lastStatus"] != "STOPPED" and RUN_TAG_KEY in tags and (run_id is None or tags[RUN_TAG_KEY] == run_id):
            found.append(task)
    return found


def _stop_one_task_mid_run(stopped: list[str], done: threading.Event) -> None:
    deadline = time.monotonic() + 120
    while not done.is_set() and time.monotonic() < deadline:
        tasks = [t for t in _run_tasks() if {"key": "stampede:scenario", "value": "smoke"} in t["tags"]]
        if len(tasks) == 2:
            done.wait(6)  # into the stage
            _ecs().stop_task(cluster="stampede-workers", task=tasks[0]["taskArn"], reason="spot interruption (test)")
            stopped.append(tasks[0]["taskArn"])
            return
        done.wait(0.5)


def test_nightly_with_ecs_workers_tears_everything_down_and_records_the_cost(
    airflow_db, dag_bag, demo_target, slack, aws_connection, monkeypatch, caplog,
):
    monkeypatch.setenv("AIRFLOW_VAR_STAMPEDE_BUDGET_RUN_USD", "5")
    dag = dag_bag.dags["loadtest_nightly"]
    stopped: list[str] = []
    done = threading.Event()
    killer = threading.Thread(target=_stop_one_task_mid_run, args=(stopped, done), daemon=True)
    killer.start()
    try:
        run = dag.test(run_conf={
            "scenarios": ["smoke"], "environment": "local", "target": demo_target.base_url,
            "worker_provider": "ecs", "workers": 2,
        })
    finally:
        done.set()
        killer.join(timeout=10)

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states == {task.task_id: "success" for task in dag.tasks}, states
    assert stopped, "no ECS task was stopped mid-run"
    assert _run_tasks(run.run_id) == []  # nothing tagged with the run id is running

    results_path = next(p for p in Path(os.environ["STAMPEDE_REPORTS_DIR"]).glob("*/results.json")
                        if json.loads(p.read_text())["run_id"] == run.run_id)
    results = json.loads(results_path.read_text())
    assert results["verdict"] == "pass" and results["stages"][0]["requests"] > 0
    cost = results["cost"]
    assert cost["provider"] == "ecs" and cost["workers"] == 2 and cost["size"] == "fargate-0.25vcpu-1gb"
    assert cost["estimate_usd"] > 0 and cost["actual_usd"] > 0
    assert json.loads((results_path.parent / "teardown.json").read_text())["left"] == 0
    assert "Cloud cost" in Path(results["report_path"]).read_text()

    texts = [m.get("text", "") for m in slack.messages()]
    assert any("Cost:" in t and "estimate" in t for t in texts), texts
    assert TOKEN not in caplog.text and AWS_SECRET not in caplog.text
