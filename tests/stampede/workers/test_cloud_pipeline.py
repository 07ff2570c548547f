"""The pipeline's worker steps with the ``ecs`` provider: moto's tasks, local stand-ins sending the load.

Real Locust (master and stand-in workers), the real demo target, real boto3 calls
against moto's server. What moto cannot show: a task's container actually
running the agent; the stand-ins do that part (STAMPEDE_CLOUD_WORKERS_STANDIN=local).
"""

from __future__ import annotations

import json
import time

import boto3
import psutil
import pytest

from stampede.infra.demo_target.server import DemoTarget
from stampede.cost import estimate as cost
from stampede.state.ledger import default_ledger
from stampede.steps.cost_actual import cost_actual
from stampede.steps.cost_check import cost_check
from stampede.steps.preflight import RunRequest, preflight
from stampede.steps.provision import provision_workers
from stampede.steps.run_stages import run_stages
from stampede.steps.teardown import teardown_workers
from stampede.workers import load_worker_set
from stampede.workers.cloud import STANDIN_DIR, TAG_RUN_ID

pytestmark = pytest.mark.integration


@pytest.fixture
def demo_target(tmp_path):
    with DemoTarget(workdir=tmp_path / "target") as target:
        yield target


def _running_tasks(run_id: str) -> list[str]:
    ecs = boto3.client("ecs")
    arns = ecs.list_tasks(cluster="stampede-workers", desiredStatus="RUNNING")["taskArns"]
    tasks = ecs.describe_tasks(cluster="stampede-workers", tasks=arns, include=["TAGS"])["tasks"] if arns else []
    return [t["taskArn"] for t in tasks
            if t["lastStatus"] != "STOPPED" and {"key": TAG_RUN_ID, "value": run_id} in t.get("tags", [])]


def _agents_alive(run_dir) -> list[int]:
    standin = load_worker_set(run_dir / STANDIN_DIR)
    return [int(h) for h in standin.handles if psutil.pid_exists(int(h))
            and psutil.Process(int(h)).status() != psutil.STATUS_ZOMBIE] if standin else []


def test_teardown_after_a_failure_in_the_middle_of_a_stage(aws, demo_target, tmp_path):
    run_dir = tmp_path / "run"
    plan = preflight(RunRequest(scenarios=["smoke"], target=demo_target.base_url, environment="local", run_id="manual__midstage-failure", workers=2, worker_provider="ecs", out_dir=str(run_dir)))
    assert plan.worker_provider == "ecs" and plan.workers == 2
    estimate = cost_check(plan, budgets=cost.Budgets())
    provisioned = provision_workers(plan)
    assert provisioned.provider == "ecs" and len(provisioned.handles) == 2
    assert len(_running_tasks(plan.run_id)) == 2 and len(_agents_alive(run_dir)) == 2

    started = time.monotonic()

    def fail_mid_stage():
        if time.monotonic() - started > 6:  # the smoke stage runs 12 s: this is its middle
            raise RuntimeError("the Airflow worker died mid-stage")
        return None

    with pytest.raises(RuntimeError, match="died mid-stage"):
        run_stages(plan, stop_probe=fail_mid_stage)

    summary = teardown_workers(plan)
    cost_actual(plan)

    assert summary.left == 0 and summary.stopped == 2
    assert _running_tasks(plan.run_id) == []
    assert _agents_alive(run_dir) == []
    recorded = json.loads((run_dir / "cost.json").read_text())
    assert recorded["estimate_usd"] == estimate["estimate_usd"] > 0
    assert 0 < recorded["actual_usd"] and recorded["provider"] == "ecs" and recorded["workers"] == 2
    assert json.loads((run_dir / "teardown.json").read_text())["left"] == 0
    assert default_ledger().get(plan.run_id)["actual_usd"] == recorded["actual_usd"]
