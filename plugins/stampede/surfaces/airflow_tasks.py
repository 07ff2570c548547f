"""Thin Airflow tasks around the pipeline's steps, and the wiring every load-test DAG shares.

Each task only translates Airflow's context (params, run id, Variables) into a
call of one step in ``stampede.steps``; the logic lives there and is tested
without Airflow. The plan travels between tasks as a small dict in XCom; the
run's data lives in its run folder, keyed by the run.

    preflight → lease_held (setup) → cost_check → provision_workers (setup) → run_stages → validate → analyse
              → cleanup_test_data, teardown_workers (teardowns) → report → notify_summary → final_verdict

Airflow skips a teardown when none of its setups succeeded, so a failed
provisioning (or cost check) would leave the lease and any half-started cloud
workers until they expire. ``lease_held`` (the run holds the target's lease that
preflight took) is therefore a setup of ``teardown_workers`` too: once preflight
passed, the teardown runs whatever failed after it (the cost check, a
half-finished provisioning, the load), tears down every worker tagged with the
run and gives the lease back. (Preflight itself cannot be that setup: Airflow
requires every direct downstream of a setup to be ALL_SUCCESS, and report,
notify and the verdict run whatever happened.) ``cleanup_test_data`` has only
the provisioning as its setup: when no worker ever started, no load was sent and
there is nothing to clean. ``final_verdict`` is given the teardown's result, so a
teardown that failed, or never ran, fails the DAG run (Airflow alone would not:
a teardown's failure does not fail its run).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from datetime import timedelta

from airflow.sdk import TriggerRule, chain, get_current_context, task

from stampede.core.errors import Refusal
from stampede.plan.run_plan import RunPlan
from stampede.safety import killswitch
from stampede.surfaces import airflow_config
from stampede.surfaces.assets import RESULTS_ALIAS
from stampede.surfaces.timeouts import task_timeouts
from stampede.surfaces.report_link import LoadTestReportLink

log = logging.getLogger(__name__)

SAFE_RETRY = {"retries": 2, "retry_delay": timedelta(seconds=10), "retry_exponential_backoff": True}


def _plan(plan: dict) -> RunPlan:
    """The run plan of a task; every task that builds one registers the target's password with the masker."""
    run_plan = RunPlan.from_dict(plan)
    airflow_config.mask_target_password(run_plan.password_env)
    return run_plan


def _stop_probe():
    return killswitch.as_probe(airflow_config.kill_switch_reason)


@task(**SAFE_RETRY, **task_timeouts("preflight"))
def preflight(default_scenarios: list[str]) -> dict:
    """Refuse unsafe or invalid runs before any load is sent; return the run plan."""
    from airflow.sdk.exceptions import AirflowFailException

    from stampede.steps import notify as notify_step
    from stampede.steps import preflight as preflight_step

    context = get_current_context()
    params = context["params"]
    airflow_config.mask_target_password()
    scenarios = params.get("scenarios") or ([params["scenario"]] if params.get("scenario") else default_scenarios)
    request = preflight_step.RunRequest(
        scenarios=tuple(scenarios) if isinstance(scenarios, (list, tuple)) else scenarios,
        dag_id=context["dag"].dag_id,
        scenario_paths=False,  # a form or run conf names files of the scenarios folder, never a path
        target=params.get("target") or "",
        environment=params.get("environment") or None,
        run_id=context["run_id"],
        users=params.get("users"),
        duration_s=params.get("duration_s"),
        workers=params.get("workers"),
        worker_provider=params.get("worker_provider") or "local",
        worker_spot=bool(params.get("worker_spot") or False),
        worker_size=params.get("worker_size") or "",
        local_ips=params.get("local_ips") or None,
    )
    try:
        plan = preflight_step.preflight(
            request,
            kill_switch=airflow_config.kill_switch_reason,
            environments_text=airflow_config.environments_override(),  # the Variable, read at run time only
            lease_pid=None,  # tasks are separate processes: the lease lasts until teardown or expiry
        )
    except Refusal as exc:
        raise AirflowFailException(f"refused: {exc}") from exc  # a refusal is final: no retry
    notify_step.notify_start(plan, channel=params.get("slack_channel"))
    return plan.to_dict()


@task(**SAFE_RETRY, **task_timeouts("lease_held"))
def lease_held(plan: dict) -> str:
    """The run holds its target's lease (taken by preflight): the setup whose teardown gives it back."""
    from airflow.sdk.exceptions import AirflowFailException

    from stampede.safety import lease

    run_plan = _plan(plan)
    current = lease.holder(run_plan.target_record)
    if current is None or current["run_id"] != run_plan.run_id:
        holder_text = "nobody" if current is None else f"run {current['run_id']}"
        raise AirflowFailException(f"lease: {run_plan.target} is held by {holder_text}, not by this run; "
                                   "fix: trigger the run again (its preflight takes the lease)")
    return run_plan.run_id


@task(**SAFE_RETRY, **task_timeouts("cost_check"))
def cost_check(plan: dict) -> dict:
    """Estimate the workers' cost; refuse the run, before any worker starts, when over a budget."""
    from airflow.sdk.exceptions import AirflowFailException

    from stampede.steps import cost_check as cost_check_step

    run_plan = _plan(plan)
    try:
        return cost_check_step.cost_check(run_plan, budgets=airflow_config.budgets(),
                                          prices_override=airflow_config.prices_override())
    except Refusal as exc:  # teardown_workers (preflight is its setup) gives the lease back
        raise AirflowFailException(f"refused: {exc}") from exc


@task(**SAFE_RETRY, **task_timeouts("provision_workers"))
def provision_workers(plan: dict) -> dict:
    from stampede.steps import provision as provision_step

    return asdict(provision_step.provision_workers(_plan(plan)))


# A retry never sends the load again: it takes the running master over from the run's checkpoint when it
# comes within the plan's owner_grace_s, else it takes the output of the master that stopped itself. No
# delay: every second a retry waits is a second of the grace gone (the DAG default waits 30 s, Airflow 5 min).
TAKEOVER_RETRY = {"retries": 2, "retry_delay": timedelta(seconds=0), "retry_exponential_backoff": False}


@task(**TAKEOVER_RETRY, **task_timeouts("run_stages"))
def run_stages(plan: dict) -> dict:
    from stampede.steps.takeover import beat_first

    run_plan = _plan(plan)
    heartbeat = beat_first(run_plan)  # a takeover beats before the seconds of imports below spend the grace
    from stampede.steps import notify as notify_step
    from stampede.steps import run_stages as run_stages_step

    _stop_load_on_kill()
    try:
        return asdict(run_stages_step.run_stages(  # each stage's reply in the thread as it ends, an early stop's too
            run_plan, stop_probe=_stop_probe(), handover=True, heartbeat=heartbeat,
            on_stage_end=lambda stage: notify_step.notify_stage_ended(run_plan, stage),
            on_stop=lambda stop: notify_step.notify_stopped(run_plan, stop)))
    except run_stages_step.LoadAlreadyStarted as exc:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(str(exc)) from exc  # another host's load: retrying here changes nothing
    finally:
        if heartbeat is not None:
            heartbeat.pause()  # ended by the load step already; a try that failed first leaves the run to the next


def _stop_load_on_kill() -> None:
    """"Mark as failed" (and any SIGTERM from the supervisor): stop this try's load at once and wait for it.

    Airflow's task runner answers SIGTERM by calling the operator's ``on_kill`` (a TaskFlow task has
    none of its own), then SIGKILLs the process 5 s later: the master is told within that time. It
    then raises, so the load step unwinds (from the signal handler) and the try fails, not succeeds.
    """
    from stampede.load.runner import stop_now

    operator = get_current_context()["ti"].task

    def on_kill() -> None:
        reason = "Airflow stopped the task (Mark as failed, or its process was terminated)"
        if stop_now(reason, wait_s=4.0):
            raise RuntimeError(f"load: {reason}; the load was stopped")

    operator.on_kill = on_kill


@task(retries=1, **task_timeouts("validate"))
def validate(plan: dict) -> str:
    from stampede.steps import notify as notify_step
    from stampede.steps import validate as validate_step

    run_plan = _plan(plan)
    verdict = validate_step.validate(run_plan).verdict
    notify_step.notify_stages(run_plan)  # the stage replies the load step did not post live
    return verdict


@task(retries=1, **task_timeouts("analyse"))
def analyse(plan: dict) -> str:
    from stampede.steps import analyse as analyse_step

    return analyse_step.analyse(_plan(plan)).verdict


@task(retries=3, retry_delay=timedelta(seconds=5), **task_timeouts("cleanup_test_data"))
def cleanup_test_data(plan: dict) -> dict:
    from stampede.steps import cleanup as cleanup_step

    cleanup = cleanup_step.cleanup_test_data(_plan(plan))
    if not cleanup.clean:
        left = "an unknown number of" if cleanup.left is None else cleanup.left
        raise RuntimeError(f"cleanup: {left} entities left ({cleanup.error})")
    return asdict(cleanup)


@task(retries=3, retry_delay=timedelta(seconds=5), **task_timeouts("teardown_workers"))
def teardown_workers(plan: dict) -> dict:
    from stampede.steps import cost_actual as cost_actual_step
    from stampede.steps import provision as provision_step
    from stampede.steps import teardown as teardown_step

    run_plan = _plan(plan)
    torn_down = teardown_step.teardown_workers(run_plan)
    if provision_step.is_cloud(run_plan):
        cost_actual_step.cost_actual(run_plan, prices_override=airflow_config.prices_override())
    return asdict(torn_down)


@task(trigger_rule=TriggerRule.ALL_DONE, retries=1, outlets=[RESULTS_ALIAS], **task_timeouts("report"))
def report(plan: dict | None) -> str | None:
    """Written once, after cleanup and teardown, with their real figures; an Asset event per scenario."""
    from stampede.steps import report as report_step
    from stampede.steps.folder import folder_of
    from stampede.surfaces.assets import results_events

    if not plan:
        return None
    run_plan = _plan(plan)
    path = report_step.report(run_plan)
    folder = folder_of(run_plan)
    url = report_step.report_url(folder)
    context = get_current_context()
    if url:  # read by the "Load test report" extra link (plugins/stampede_report_link.py)
        context["ti"].xcom_push(key="report_url", value=url)
    if path:  # downstream DAGs (a release gate) read the verdict and figures from the event's extra
        for asset, extra in results_events(folder.results(), report_url=url, dag_id=context["dag"].dag_id):
            context["outlet_events"][RESULTS_ALIAS].add(asset, extra=extra)
    return str(path) if path else None


@task(trigger_rule=TriggerRule.ALL_DONE, retries=1, **task_timeouts("notify_summary"))
def notify_summary(plan: dict | None) -> dict:
    from stampede.steps import notify as notify_step

    if not plan:  # refused in preflight: its failure callback already told Slack why
        return {"ok": False, "reason": "no run plan: preflight refused or failed"}
    return notify_step.notify_summary(_plan(plan), dag_id=get_current_context()["dag"].dag_id)


@task(trigger_rule=TriggerRule.ALL_DONE, **task_timeouts("final_verdict"))
def final_verdict(plan: dict | None, torn_down: dict | None = None) -> dict:
    """The run's outcome as the DAG run's state: fails on a breach, an invalid run or anything left behind.

    :param torn_down: the teardown's result; None when it failed, was skipped or died (workers may be alive).
    """
    from airflow.sdk.exceptions import AirflowFailException

    from stampede.steps import verdict as verdict_step

    if not plan:
        raise AirflowFailException("no run: preflight refused or failed (see the preflight task's log); no load was sent")
    try:
        return verdict_step.final_verdict(_plan(plan), teardown_finished=torn_down is not None)
    except verdict_step.RunFailed as exc:
        raise AirflowFailException(str(exc)) from exc  # the outcome is final: a retry changes nothing


@task(retries=0, **task_timeouts("search_breaking_point"))  # a retry would send the load again
def search_breaking_point(plan: dict) -> dict:
    """Step the load up until a threshold breaks or throughput stops growing, then narrow down."""
    from stampede.steps import breaking_point as breaking_point_step

    _stop_load_on_kill()
    run_plan = _plan(plan)
    cap = breaking_point_step.user_cap_for(run_plan, airflow_config.environments_override())
    result = breaking_point_step.search_breaking_point(run_plan, stop_probe=_stop_probe(), user_cap=cap)
    return {"verdict": result.verdict, "breaking_point": asdict(result.breaking_point) if result.breaking_point else None}


@task(retries=2, retry_delay=timedelta(seconds=30), **task_timeouts("reap"))
def reap() -> dict:
    """Stale test data and expired workers (``stampede.steps.reap``), with the deployment's environments."""
    from stampede.steps.reap import reap_everything

    params = get_current_context()["params"]
    return reap_everything(
        older_than_s=float(params["older_than_s"]), extra_targets=list(params.get("reaper_targets") or []),
        environments_text=airflow_config.environments_override(),
    )


def wire_breaking_point(default_scenario: str) -> None:
    """preflight → cost → [workers] → search → analyse → {cleanup, teardown} → report → notify → verdict."""
    _wire([default_scenario], [search_breaking_point])


def wire_pipeline(default_scenarios: list[str]) -> None:
    """preflight → cost → [workers] → stages → validate → analyse → {cleanup, teardown} → report → notify → verdict."""
    _wire(default_scenarios, [run_stages, validate])


def _wire(default_scenarios: list[str], load_steps: list) -> None:
    """The shape every load-test DAG shares; only the steps that send and judge the load differ."""
    plan = preflight(default_scenarios)
    held = lease_held(plan)
    workers = provision_workers(plan)
    cleaned = cleanup_test_data(plan)
    torn_down = teardown_workers(plan)

    chain(held, cost_check(plan), workers, *[step(plan) for step in load_steps], analyse(plan), cleaned)
    cleaned.as_teardown(setups=workers)
    cleaned >> torn_down.as_teardown(setups=[held, workers])  # runs once the lease is held, whatever failed since
    reported = report(plan)
    reported.operator.operator_extra_links = (LoadTestReportLink(),)  # on the report task only
    torn_down >> reported >> notify_summary(plan) >> final_verdict(plan, torn_down)

