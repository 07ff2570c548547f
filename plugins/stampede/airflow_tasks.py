"""Thin Airflow tasks around the pipeline steps, and the wiring every load-test DAG shares.

Each task only translates Airflow's context (params, run id) into a call of
a plain function in ``stampede.pipeline``; the logic lives there and is tested
without Airflow. The plan travels between tasks as a small dict in XCom; the
run's data lives in its run folder, keyed by the run id.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.sdk import TriggerRule, get_current_context, task

from stampede import killswitch, pipeline
from stampede.plan import RunPlan

log = logging.getLogger(__name__)

SAFE_RETRY = {"retries": 2, "retry_delay": timedelta(seconds=10), "retry_exponential_backoff": True}


def _plan(plan: dict) -> RunPlan:
    return RunPlan.from_dict(plan)


@task(**SAFE_RETRY)
def preflight(default_scenarios: list[str]) -> dict:
    """Refuse unsafe or invalid runs before any load is sent; return the run plan."""
    from airflow.sdk.exceptions import AirflowFailException

    context = get_current_context()
    params = context["params"]
    scenarios = params.get("scenarios") or ([params["scenario"]] if params.get("scenario") else default_scenarios)
    reason = killswitch.airflow_reason()
    try:
        if reason:
            raise pipeline.RunRefused(f"{reason}; fix: clear the Airflow Variable {killswitch.VARIABLE}")
        plan = pipeline.preflight(
            scenarios=list(scenarios),
            target=params.get("target") or "",
            environment=params.get("environment") or None,
            run_id=context["run_id"],
            users=params.get("users"),
            duration_s=params.get("duration_s"),
            workers=params.get("workers"),
        )
    except pipeline.RunRefused as exc:
        raise AirflowFailException(f"refused: {exc}") from exc  # a refusal is final: no retry
    pipeline.notify_start(plan)
    return plan.to_dict()


@task
def cost_check(plan: dict) -> dict:
    """Local workers cost nothing; cloud providers estimate here (issue: cloud workers)."""
    return {"provider": "local", "estimate_usd": 0.0}


@task(**SAFE_RETRY)
def provision_workers(plan: dict) -> dict:
    return pipeline.provision_workers(_plan(plan))


@task(retries=0)  # a retry would send the load again; the operator decides
def run_stages(plan: dict) -> dict:
    return pipeline.run_stages(_plan(plan), stop_probe=killswitch.airflow_reason)


@task(retries=1)
def validate(plan: dict) -> str:
    return pipeline.validate(_plan(plan)).verdict


@task(retries=1)
def report(plan: dict) -> str:
    return pipeline.report(_plan(plan))


@task(retries=3, retry_delay=timedelta(seconds=5))
def cleanup_test_data(plan: dict) -> dict:
    cleanup = pipeline.cleanup_test_data(_plan(plan))
    if not cleanup.ok:
        raise RuntimeError(f"cleanup: {cleanup.left} entities left ({cleanup.error})")
    return cleanup.__dict__


@task(retries=3, retry_delay=timedelta(seconds=5))
def teardown_workers(plan: dict) -> dict:
    return pipeline.teardown_workers(_plan(plan))


@task(trigger_rule=TriggerRule.ALL_DONE, retries=1)
def notify_summary(plan: dict) -> dict:
    return pipeline.notify_summary(_plan(plan))


@task(trigger_rule=TriggerRule.ALL_DONE)
def final_verdict(plan: dict) -> dict:
    """The run's outcome as the DAG run's state: fails on a breach, an invalid run or data left behind."""
    return pipeline.final_verdict(_plan(plan))


def wire_pipeline(default_scenarios: list[str]) -> None:
    """preflight → cost → [workers] → stages → validate → report → {cleanup, teardown} → notify → verdict."""
    plan = preflight(default_scenarios)
    cost = cost_check(plan)
    workers = provision_workers(plan)
    stages = run_stages(plan)
    checked = validate(plan)
    reported = report(plan)
    cleaned = cleanup_test_data(plan)
    torn_down = teardown_workers(plan)
    summary = notify_summary(plan)
    verdict = final_verdict(plan)

    cost >> workers >> stages >> checked >> reported
    reported >> cleaned.as_teardown(setups=workers)
    cleaned >> torn_down.as_teardown(setups=workers)
    torn_down >> summary >> verdict
