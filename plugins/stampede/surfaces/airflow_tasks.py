"""Thin Airflow tasks around the pipeline steps, and the wiring every load-test DAG shares.

Each task only translates Airflow's context (params, run id) into a call of
a plain function in ``stampede.steps.pipeline``; the logic lives there and is tested
without Airflow. The plan travels between tasks as a small dict in XCom; the
run's data lives in its run folder, keyed by the run id.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.sdk import TriggerRule, chain, get_current_context, task

from stampede.plan import environments
from stampede.safety import killswitch
from stampede.steps import pipeline
from stampede.plan.run_plan import RunPlan

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
    try:
        plan = pipeline.preflight(
            scenarios=list(scenarios),
            target=params.get("target") or "",
            environment=params.get("environment") or None,
            run_id=context["run_id"],
            users=params.get("users"),
            duration_s=params.get("duration_s"),
            workers=params.get("workers"),
            kill_switch=killswitch.airflow_reason,
            environments_text=environments.airflow_override(),  # the Variable, read at run time only
            lease_pid=None,  # tasks are separate processes: the lease lasts until teardown or expiry
            worker_provider=params.get("worker_provider") or "local",
            worker_spot=bool(params.get("worker_spot") or False),
            worker_size=params.get("worker_size") or "",
        )
    except pipeline.RunRefused as exc:
        raise AirflowFailException(f"refused: {exc}") from exc  # a refusal is final: no retry
    pipeline.notify_start(plan)
    return plan.to_dict()


@task(**SAFE_RETRY)
def cost_check(plan: dict) -> dict:
    """Estimate the workers' cost; refuse the run, before any worker starts, when over a budget."""
    from airflow.sdk import Variable
    from airflow.sdk.exceptions import AirflowFailException

    from stampede.cost import estimate as cost

    budgets = cost.Budgets(
        run_usd=float(Variable.get("stampede_budget_run_usd", default=None) or cost.DEFAULT_RUN_BUDGET_USD),
        month_usd=float(Variable.get("stampede_budget_month_usd", default=None) or cost.DEFAULT_MONTH_BUDGET_USD),
    )
    run_plan = _plan(plan)
    try:
        return cost.cost_check(run_plan, budgets=budgets, prices_override=Variable.get("stampede_prices", default=None))
    except cost.BudgetExceeded as exc:
        pipeline.release_target(run_plan)  # nothing starts, so no teardown will give the lease back
        raise AirflowFailException(f"refused: {exc}") from exc


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
    path = pipeline.report(_plan(plan))
    url = pipeline._report_url(path)
    if url:  # read by the "Load test report" extra link (plugins/stampede_report_link.py)
        get_current_context()["ti"].xcom_push(key="report_url", value=url)
    return path


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
def notify_summary(plan: dict | None) -> dict:
    if not plan:  # refused in preflight: its failure callback already told Slack why
        return {"ok": False, "reason": "no run plan: preflight refused or failed"}
    return pipeline.notify_summary(_plan(plan))


@task(trigger_rule=TriggerRule.ALL_DONE)
def final_verdict(plan: dict | None) -> dict:
    """The run's outcome as the DAG run's state: fails on a breach, an invalid run or data left behind."""
    if not plan:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("no run: preflight refused or failed (see the preflight task's log); no load was sent")
    return pipeline.final_verdict(_plan(plan))


@task(retries=0)  # a retry would send the load again; the operator decides
def search_breaking_point(plan: dict) -> dict:
    """Step the load up until a threshold breaks or throughput stops growing, then narrow down."""
    from stampede.analysis import breaking_point

    run_plan = _plan(plan)
    cap = breaking_point.user_cap_for(run_plan, environments.airflow_override())
    result = breaking_point.search(run_plan, stop_probe=killswitch.airflow_reason, user_cap=cap)
    return {"verdict": result.verdict, "breaking_point": result.breaking_point}


def wire_breaking_point(default_scenario: str) -> None:
    """preflight → cost → [workers] → search → report → {cleanup, teardown} → notify → verdict."""
    _wire([default_scenario], [search_breaking_point])


def wire_pipeline(default_scenarios: list[str]) -> None:
    """preflight → cost → [workers] → stages → validate → report → {cleanup, teardown} → notify → verdict."""
    _wire(default_scenarios, [run_stages, validate])


def _wire(default_scenarios: list[str], load_steps: list) -> None:
    """The shape every load-test DAG shares; only the steps that send and judge the load differ."""
    plan = preflight(default_scenarios)
    workers = provision_workers(plan)
    reported = report(plan)
    cleaned = cleanup_test_data(plan)
    torn_down = teardown_workers(plan)

    chain(cost_check(plan), workers, *[step(plan) for step in load_steps], reported)
    reported >> cleaned.as_teardown(setups=workers)
    cleaned >> torn_down.as_teardown(setups=workers)
    torn_down >> notify_summary(plan) >> final_verdict(plan)
