"""The pipeline's steps as plain functions, shared by the Airflow DAGs and the CLI.

Each step is idempotent and keyed by the run id: its inputs and outputs live
in the run's folder (``reports/<run tag>/``), so a retried or later task
(another process under Airflow) picks up where the previous one left off.

    preflight → provision_workers → run_stages → validate → report
              → cleanup_test_data → teardown_workers → notify_summary → final verdict
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from stampede.safety import killswitch
from stampede.safety import lease as target_lock
from stampede.analysis.capacity import capacity_of_stages
from stampede.plan.environments import (
    EnvironmentsError, TargetRefused, check_allowed_hours, load_environments, resolve_target,
)
from stampede.safety.health import probe
from stampede.safety.hours import INVALIDATING_KINDS, with_allowed_hours
from stampede.load.runner import GeneratorSample, LocustRun, locustfiles_for, run_master
from stampede.figures.stages import generator_health, stage_results
from stampede.plan.run_plan import RunPlan
from stampede.core.records import CleanupResult, RunResult, read_results, write_results
from stampede.plan.scenario import ScenarioError, load_scenario
from stampede.workers import LocalWorkers, load_worker_set, provider_for
from stampede.steps.worker_lifecycle import master_bind_host, teardown_problem, worker_sampler
from stampede.workers.local import default_worker_count
from stampede.core import paths

log = logging.getLogger(__name__)

HEALTH_ATTEMPTS = 3
WORKER_TTL_MARGIN_S = 1800


class RunRefused(ValueError):
    """Preflight refused the run; no load was sent."""


class RunFailed(RuntimeError):
    """The run finished and its verdict is not a pass (raised by the final step)."""


def reports_root() -> Path:
    return paths.reports_root()


def run_dir_for(plan: RunPlan) -> Path:
    path = Path(plan.out_dir) if plan.out_dir else reports_root() / plan.run_tag
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- preflight ------------------------------------------------------------------
def preflight(
    *,
    scenarios: list[str],
    target: str,
    run_id: str,
    environment: str | None = None,
    users: int | None = None,
    duration_s: int | None = None,
    workers: int | None = None,
    progress_interval_s: float = 5.0,
    out_dir: str | None = None,
    kill_switch: Callable[[], str | None] = killswitch.local_reason,
    environments_text: str | None = None,
    lease_pid: int | None = -1,
    now: datetime | None = None,
    worker_provider: str = "local",
    worker_spot: bool = False,
    worker_size: str = "",
) -> RunPlan:
    """Check everything that can be checked before load is sent; return the run plan.

    The checks run cheapest and safest first; every one before the health check
    sends nothing to the target. Passing takes the target's lease (one run per
    target), given back by :func:`teardown_workers`.

    :param kill_switch: why the kill switch is on, or None (Airflow passes the Variable's check).
    :param environments_text: the environments config (the Airflow Variable); default the file.
    :param lease_pid: the process that holds the target's lease: -1 this one (the CLI),
        None a DAG run (held until teardown or expiry).
    :param now: the time judged against the environment's allowed hours (default: now).
    """
    if not scenarios:
        raise RunRefused("scenario: none given; fix: name at least one scenario")
    try:
        loaded = [load_scenario(name) for name in scenarios]
        loaded = [s.with_overrides(users=users, duration_s=duration_s) for s in loaded]
    except ScenarioError as exc:
        raise RunRefused(str(exc)) from exc
    try:
        environments = load_environments(environments_text)
    except EnvironmentsError as exc:
        raise RunRefused(str(exc)) from exc
    if not target and environment in environments and environments[environment].base_urls:
        target = environments[environment].base_urls[0]
    if not target:
        raise RunRefused("target: none given; fix: pass a base URL incl. /v1, or an environment that lists one")
    target = target.rstrip("/")
    try:
        env = resolve_target(target, environments)
        check_allowed_hours(env, now)
    except TargetRefused as exc:
        raise RunRefused(str(exc)) from exc
    if environment and environment != env.name:
        raise RunRefused(
            f"environment: target {target} belongs to {env.name!r}, not {environment!r}; fix: pass environment={env.name}"
        )
    peak = max(s.peak_users for s in loaded)
    if env.max_users and peak > env.max_users:
        raise RunRefused(f"users: {peak} exceeds the {env.name} cap of {env.max_users}; fix: lower users")
    if workers is not None and workers < 0:
        raise RunRefused("workers: must be 0 (one process) or more; fix: pass --workers 2")
    if worker_provider not in ("local", "ecs", "ec2"):
        raise RunRefused(f"worker_provider: {worker_provider!r} is unknown; fix: local, ecs or ec2")
    if worker_provider != "local":  # cloud workers: count and size from the peak users (stampede.workers.sizing)
        from stampede.workers.sizing import plan_workers

        try:
            workers = plan_workers(peak, provider=worker_provider, count=workers or None, size=worker_size or None).count
        except ValueError as exc:
            raise RunRefused(str(exc)) from exc
    plan = RunPlan(
        run_id=run_id, target=target, environment=env.name, scenarios=tuple(loaded),
        workers=default_worker_count(peak) if workers is None else workers,
        progress_interval_s=progress_interval_s, out_dir=out_dir,
        worker_provider=worker_provider, worker_spot=worker_spot, worker_size=worker_size,
        allowed_hours=env.allowed_hours,
    )
    try:
        plan.locustfile  # noqa: B018 - validates that all scenarios share one locustfile
    except ValueError as exc:
        raise RunRefused(str(exc)) from exc
    reason = kill_switch()
    if reason:
        raise RunRefused(
            f"{reason}; fix: clear the Airflow Variable {killswitch.VARIABLE}, unset STAMPEDE_KILL_SWITCH "
            f"and remove {killswitch.kill_switch_file()}"
        )
    try:
        target_lock.acquire(
            locks_dir(), target, run_id=run_id, ttl_s=plan.load_duration_s + WORKER_TTL_MARGIN_S,
            pid=os.getpid() if lease_pid == -1 else lease_pid,
        )
    except target_lock.TargetBusy as exc:
        raise RunRefused(str(exc)) from exc
    try:
        check_health(target)
    except RunRefused:
        target_lock.release(locks_dir(), target, run_id=run_id)
        raise
    return plan


def locks_dir() -> Path:
    return reports_root() / "locks"


def check_health(target: str, attempts: int = HEALTH_ATTEMPTS) -> None:
    problem = probe(target, timeout_s=5, attempts=attempts, pause_s=1)
    if problem:
        raise RunRefused(f"target: {problem}; fix: start or repair the target first")


# -- workers ----------------------------------------------------------------------
def provision_workers(plan: RunPlan) -> dict:
    run_dir = run_dir_for(plan)
    if plan.workers == 0:
        return {"provider": "none", "count": 0}
    if plan.worker_provider not in ("", "local"):  # ECS / EC2 (stampede.steps.worker_lifecycle)
        from stampede.steps.worker_lifecycle import provision_cloud_workers

        return provision_cloud_workers(plan, run_dir, ttl_s=plan.load_duration_s + WORKER_TTL_MARGIN_S)
    workers = LocalWorkers().provision(
        run_id=plan.run_id, run_dir=run_dir, count=plan.workers, locustfiles=locustfiles_for(plan),
        ttl_s=plan.load_duration_s + WORKER_TTL_MARGIN_S,
    )
    return {"provider": workers.provider, "count": workers.count, "master_port": workers.master_port}


def teardown_workers(plan: RunPlan) -> dict:
    """Stop every worker of the run and verify none is left; raises when one survives."""
    run_dir = run_dir_for(plan)
    if plan.worker_provider not in ("", "local"):  # stops all tagged with the run id, verifies, records cost
        from stampede.steps.worker_lifecycle import teardown_cloud_workers

        summary = teardown_cloud_workers(plan, run_dir)
        release_target(plan)
        return summary
    workers = load_worker_set(run_dir)
    if workers is None:
        release_target(plan)
        return {"stopped": 0, "left": 0}
    (run_dir / "workers.stop").write_text("teardown")
    left = LocalWorkers().teardown(workers)
    if left:
        raise RuntimeError(f"teardown: workers {left} of run {plan.run_id} are still alive")
    release_target(plan)
    return {"stopped": workers.count, "left": 0}


def release_target(plan: RunPlan) -> bool:
    """Give the target's lease back (idempotent); only once no worker of the run is alive."""
    released = target_lock.release(locks_dir(), plan.target, run_id=plan.run_id)
    if released:
        log.info("Released the lease on %s held by run %s", plan.target, plan.run_id)
    return released


# -- load -------------------------------------------------------------------------
def run_stages(plan: RunPlan, *, stop_probe: Callable[[], str | None] = lambda: None) -> dict:
    run_dir = run_dir_for(plan)
    workers = load_worker_set(run_dir)
    provider = provider_for(plan.worker_provider)
    if plan.workers and (workers is None or len(provider.alive(workers)) < workers.count):
        provision_workers(plan)  # a retry after the workers went away: bring them back
        workers = load_worker_set(run_dir)
    log.info(
        "Running %d stages of %s against %s with %s", len(plan.stages), plan.scenario_name, plan.target,
        f"{plan.workers} {plan.worker_provider} workers" if plan.workers else "one local process",
    )
    from stampede.load.runner import EXPECT_WORKERS_WAIT_S, GRACE_S
    from stampede.figures.server import sampling

    with sampling(environment=plan.environment, target=plan.target, run_dir=run_dir,
                  max_s=plan.load_duration_s + GRACE_S + EXPECT_WORKERS_WAIT_S):  # the target's own metrics
        run = run_master(
            plan, run_dir,
            master_port=workers.master_port if workers else None,
            expect_workers=plan.workers,
            worker_processes=worker_sampler(plan, run_dir, workers),
            stop_probe=with_allowed_hours(plan, stop_probe),
            master_bind_host=master_bind_host(plan),
            stage_health=lambda: probe(plan.target, timeout_s=2.0, attempts=2, pause_s=0.5),
        )
    _save_samples(run, run_dir / "generator_samples.json")
    output = run.output()
    return {"exit_code": run.exit_code, "stopped": output.get("stopped"), "killed_by_timeout": run.killed_by_timeout}


def run_load(plan: RunPlan, *, stop_probe: Callable[[], str | None] = lambda: None) -> RunResult:
    """Workers, stages and validation in this process (the bench, tests); the workers go whatever happens."""
    try:
        provision_workers(plan)
        run_stages(plan, stop_probe=stop_probe)
        return validate(plan)
    finally:
        teardown_workers(plan)


def _save_samples(run: LocustRun, path: Path) -> None:
    path.write_text(json.dumps([s.__dict__ for s in run.samples]))


# -- validate and report ------------------------------------------------------------
def validate(plan: RunPlan) -> RunResult:
    """Per-stage figures, generator health, Great Expectations verdict; writes results.json."""
    from stampede.analysis.expectations import apply_outcome, validate_stages

    run_dir = run_dir_for(plan)
    output = json.loads((run_dir / "locust_output.json").read_text())
    samples = [GeneratorSample(**s) for s in json.loads((run_dir / "generator_samples.json").read_text())]
    planned = [s.__dict__ for s in plan.stages]
    stages = stage_results(output, planned)
    health, saturated = generator_health(samples, output["stages"])
    for index in saturated:
        stages[index].valid = False
    ran = [s for s, o in zip(stages, output["stages"]) if o.get("start") is not None]
    for stage in stages:
        if stage not in ran:  # never started: the run stopped before it
            stage.passed, stage.judged_on = False, "not_run"
    for stage, planned_stage in zip(stages, plan.stages):
        if stage in ran and not planned_stage.judged:
            stage.judged_on = "ramp_down"  # reported, not held to the thresholds
    ran = [s for s in ran if s.judged_on != "ramp_down"]
    for stage in ran:
        if stage.judged_on == "whole":  # all ramp, no steady part: throughput is still climbing
            stage.thresholds.pop("min_rps", None)
    outcome = validate_stages(ran)
    apply_outcome(ran, outcome)
    stopped = output.get("stopped")
    verdict = _verdict(ran, stopped, health.saturated)
    result = RunResult(
        run_id=plan.run_id, scenario=plan.scenario_name, target=plan.target, verdict=verdict,
        started_at=_iso(output["started_at"]), finished_at=_iso(output["finished_at"]),
        stages=stages, generator=health, environment=plan.environment, run_tag=plan.run_tag,
        aborted=stopped is not None, stopped=stopped, breaches=output.get("breaches", []),
        series=output.get("series", []), workers=plan.workers, validation=outcome.gx_result,
    )
    result.cleanup.created = sum(output.get("created", {}).values())
    capacity = capacity_of_stages(ran)  # three or more user levels: fit the USL
    result.capacity = capacity.to_dict() if capacity else None
    write_results(result, run_dir / "results.json")
    notify_stages(plan, result)
    return result


def notify_stages(plan: RunPlan, result: RunResult) -> None:
    """One Slack message per stage that ran, and one for an abort; once per run (a retry does not repeat).

    Never raises: Slack must not block validation, cleanup or teardown.
    """
    marker = run_dir_for(plan) / "slack_stages.sent"
    if marker.exists():
        return
    try:
        from stampede.render.slack import abort_message, stage_message

        hook = slack_hook(plan)
        for stage in result.to_dict()["stages"]:
            if stage.get("judged_on") != "not_run":
                message = stage_message(stage)
                hook.post_message(text=message.text, blocks=message.blocks)
        if result.stopped:
            kind = result.stopped.get("kind", "stop")
            message = abort_message(plan.run_id, f"{kind}: {result.stopped.get('reason', 'no reason recorded')}")
            hook.post_message(text=message.text, blocks=message.blocks)
        marker.write_text("sent")
    except Exception as exc:  # noqa: BLE001 - a Slack problem is logged, never fatal here
        log.warning("Slack stage messages not sent: %s: %s", type(exc).__name__, exc)


def _verdict(stages, stopped: dict | None, saturated: bool) -> str:
    if saturated or (stopped and stopped.get("kind") in INVALIDATING_KINDS) or not stages:
        return "invalid"
    # a target that went down under load is a finding about the target, not a broken run
    if (stopped and stopped.get("kind") in ("abort", "target_unhealthy")) or not all(s.passed for s in stages):
        return "fail"
    return "pass"


def report(plan: RunPlan) -> str:
    from stampede.steps.analyse import analyse, publish
    from stampede.render.report import render_report

    run_dir = run_dir_for(plan)
    result = read_results(run_dir / "results.json")
    analyse(result, run_dir)  # server metrics, bottlenecks, history and baseline, recommendations
    path = render_report(result, run_dir)
    result.report_path = str(path)
    write_results(result, run_dir / "results.json")
    publish(result, run_dir, report_url=_report_url(str(path)))  # S3 copy when configured; report link in history
    return str(path)


# -- cleanup ------------------------------------------------------------------------
def cleanup_test_data(plan: RunPlan) -> CleanupResult:
    """Delete every entity the run created (by its run tag) and prove none is left."""
    from stampede.cleanup.run_data import cleanup_run_data

    run_dir = run_dir_for(plan)
    password = os.environ.get(plan.password_env, "")
    try:
        outcome = cleanup_run_data(
            base_url=plan.target, run_tag=plan.run_tag, email=plan.accounts["admin"], password=password,
        )
        cleanup = CleanupResult(
            deleted=outcome.deleted, left=outcome.left, ok=outcome.left == 0 and not outcome.errors,
            error="; ".join(outcome.errors) or None,
        )
    except Exception as exc:  # reported in results.json and Slack; the caller decides to fail
        cleanup = CleanupResult(ok=False, left=-1, error=f"{type(exc).__name__}: {exc}")
    path = run_dir / "results.json"
    if path.exists():
        result = read_results(path)
        cleanup.created = result.cleanup.created
        result.cleanup = cleanup
        write_results(result, path)
    (run_dir / "cleanup.json").write_text(json.dumps(cleanup.__dict__))
    return cleanup


# -- notify and verdict ---------------------------------------------------------------
def slack_hook(plan: RunPlan):
    from stampede.hooks.slack import StampedeSlackHook

    return StampedeSlackHook(fallback_dir=run_dir_for(plan))


def notify_start(plan: RunPlan) -> None:
    from stampede.render.slack import start_message

    message = start_message(plan.to_dict() | {"stages": [s.__dict__ for s in plan.stages]})
    slack_hook(plan).post_message(text=message.text, blocks=message.blocks)


def notify_summary(plan: RunPlan) -> dict:
    from stampede.render.slack import summary_message

    run_dir = run_dir_for(plan)
    path = run_dir / "results.json"
    if not path.exists():
        return {"ok": False, "reason": "no results"}
    results = json.loads(path.read_text())
    report_path = results.get("report_path")
    message = summary_message(results, report_url=_report_url(report_path))
    hook = slack_hook(plan)
    answer = hook.post_message(text=message.text, blocks=message.blocks)
    chart = run_dir / "charts" / "load.png"
    if chart.exists():  # the main chart as an image (files_upload_v2)
        answer["chart"] = hook.upload_file(
            path=chart, title=f"{results.get('scenario')} {results.get('verdict', '').upper()}: users, req/s, errors",
            comment=f"Load over time, run {results.get('run_id')}",
        )
    return answer


def _report_url(report_path: str | None) -> str | None:
    if not report_path:
        return None
    base = os.environ.get("STAMPEDE_REPORTS_BASE_URL")
    if base:
        return f"{base.rstrip('/')}/{Path(report_path).parent.name}/{Path(report_path).name}"
    return Path(report_path).resolve().as_uri()


def final_verdict(plan: RunPlan) -> dict:
    """Fail loudly when the run did not pass, left test data behind or left cloud workers running."""
    left_behind = teardown_problem(run_dir_for(plan))
    if left_behind and not (run_dir_for(plan) / "results.json").exists():
        raise RunFailed(left_behind)
    result = read_results(run_dir_for(plan) / "results.json")
    summary = {"verdict": result.verdict, "cleanup_left": result.cleanup.left, "results": str(run_dir_for(plan) / "results.json")}
    problems = []
    if result.verdict != "pass":
        why = result.stopped["reason"] if result.stopped else ", ".join(
            f"{s.name}: {c.metric} {c.value} !{c.op} {c.threshold}" for s in result.stages for c in s.checks if not c.passed
        )
        problems.append(f"verdict {result.verdict}" + (f" ({why})" if why else ""))
    if not result.cleanup.ok or result.cleanup.left != 0:
        problems.append(f"test data left on the target: {result.cleanup.left} ({result.cleanup.error or 'see results'})")
    if left_behind:
        problems.append(left_behind)
    if problems:
        raise RunFailed("; ".join(problems))
    return summary


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")
