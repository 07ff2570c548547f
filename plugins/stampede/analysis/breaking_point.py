"""The breaking-point search: step the load up until the target breaks, then narrow down.

    levels = start, start·f, start·f², … ≤ max      (or start + k·step)
    run each level as one short stage (its own Locust master; the workers stay)
    judge it on its steady part:
        bad   when a threshold breaks (p95/p99/error rate, strict as in validation),
              or at a knee: throughput grew less than ``knee_efficiency`` × the load's
              relative growth since the last good step (the target stopped scaling),
              or (open model) more than 1 % of the iterations found no free user
    stop at the first bad level, then bisect ``refine_steps`` times between the last
    good and the first bad level.

The breaking point is the highest good level: the most load the target held
(``users`` / ``rps`` / ``p95_ms`` / ``error_rate`` there), with the ``reason`` the
next level failed. Every step's figures go to ``results.json`` as ``steps[]``
(and as ``stages[]``, so the report and Slack show them), and the capacity model
(:mod:`stampede.analysis.capacity`) is fitted to the valid closed-model steps.

Safety: the search never exceeds the environment's user cap (its maximum is
clamped), every step is bounded in time by ``run_master``'s wall-clock limit, the
kill switch is polled before and during every step, and a step on a saturated
generator stops the search: beyond it, the figures measure the generator.

Plain functions, no Airflow; ``search`` runs the steps, the rest is pure.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from stampede.analysis.capacity import capacity_from_points
from stampede.safety.hours import kind_of, stop_request, with_allowed_hours
from stampede.load.runner import run_master
from stampede.figures.stages import generator_health, stage_results
from stampede.plan.run_plan import RunPlan
from stampede.core.records import GeneratorHealth, RunResult, StageResult, write_results
from stampede.plan.scenario import Search, Stage
from stampede.workers import LocalWorkers, load_worker_set

log = logging.getLogger(__name__)

__all__ = ["StepFigures", "plan_levels", "judge_step", "bisect_level", "breaking_point_of", "search", "user_cap_for"]

DROPPED_LIMIT = 0.01  # open model: more dropped iterations than this fraction means the target could not keep up
SEARCH_THRESHOLDS = ("p95_ms", "p99_ms", "error_rate")  # min_rps belongs to a fixed load, not to a search


@dataclass
class StepFigures:
    """One step of the search: its load, its steady figures and how it was judged."""

    index: int
    phase: str  # step (stepping up) | refine (bisecting)
    level: float  # users (closed model) or iterations/s (open model)
    users: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    error_rate: float
    target_rate: float | None = None
    iterations: int | None = None
    dropped_iterations: int | None = None
    valid: bool = True  # False: the generator saturated during the step
    good: bool | None = None
    reasons: list[str] = field(default_factory=list)
    generator_cpu_max_pct: float = 0.0
    generator_demand_max_pct: float = 0.0
    run_dir: str = ""


# -- pure parts -------------------------------------------------------------------
def plan_levels(search_spec: Search, *, cap: float | None = None, whole: bool = True) -> list[float]:
    """The step-up levels from start to the maximum (clamped to ``cap``), the maximum always included."""
    top = min(search_spec.maximum, cap) if cap else search_spec.maximum
    levels: list[float] = []
    level = search_spec.start
    while level < top - 1e-9 and len(levels) < 100:
        value = float(round(level)) if whole else round(level, 3)
        if not levels or value > levels[-1]:
            levels.append(value)
        level = level * search_spec.step_factor if search_spec.step_factor else level + (search_spec.step_increment or 1)
    if not levels or top > levels[-1]:
        levels.append(float(math.floor(top)) if whole else top)
    return levels


def judge_step(
    step: StepFigures, last_good: StepFigures | None, thresholds: dict[str, float], knee_efficiency: float
) -> tuple[bool, list[str]]:
    """Good or bad, and why (thresholds strict as in validation; knee against the last good step)."""
    reasons = []
    if step.requests == 0:
        reasons.append(f"no requests at {_load(step)}")
    values = {"p95_ms": step.p95_ms, "p99_ms": step.p99_ms, "error_rate": step.error_rate}
    for metric in SEARCH_THRESHOLDS:
        limit = thresholds.get(metric)
        value = values[metric]
        if limit is not None and value is not None and value >= limit:
            shown = f"{value:.2%} >= {limit:.2%}" if metric == "error_rate" else f"{value:.0f} ms >= {limit:.0f} ms"
            reasons.append(f"threshold {metric} broke at {_load(step)}: {shown}")
    if step.iterations and step.dropped_iterations is not None and step.dropped_iterations > DROPPED_LIMIT * step.iterations:
        reasons.append(
            f"{step.dropped_iterations} of {step.iterations} iterations dropped at {_load(step)}: "
            "every pre-allocated user was busy (the target slowed down)"
        )
    if last_good is not None and last_good.rps > 0 and step.level > last_good.level:
        load_growth = step.level / last_good.level - 1
        rps_growth = step.rps / last_good.rps - 1
        if rps_growth < knee_efficiency * load_growth:
            reasons.append(
                f"knee at {_load(step)}: throughput grew {rps_growth:+.0%} ({last_good.rps:.1f} → {step.rps:.1f} req/s) "
                f"while the load grew {load_growth:+.0%}"
            )
    return not reasons, reasons


def bisect_level(good: float, bad: float, *, whole: bool = True) -> float | None:
    """The level halfway between the last good and the first bad one, or None when they are adjacent."""
    middle = (good + bad) / 2
    if whole:
        middle = float(math.floor(middle))
        return middle if good < middle < bad else None
    return round(middle, 3) if bad - good > max(0.02 * good, 0.5) else None


def breaking_point_of(steps: list[StepFigures], *, cap_reached: bool, stopped: str | None) -> dict[str, Any]:
    """``{users, rps, p95_ms, error_rate, reason, …}`` from the judged steps."""
    valid = [s for s in steps if s.valid and s.good is not None]
    good = [s for s in valid if s.good]
    bad = [s for s in valid if not s.good]
    best = max(good, key=lambda s: s.level) if good else None
    first_bad = min((s for s in bad if best is None or s.level > best.level), key=lambda s: s.level, default=None)
    if stopped:
        reason = stopped
    elif first_bad is not None:
        reason = "; ".join(first_bad.reasons)
    elif cap_reached:
        reason = "no break up to the search's maximum (or the environment's user cap): the breaking point lies above"
    else:
        reason = "no step was judged"
    point: dict[str, Any] = {
        "users": best.users if best else None,
        "rps": best.rps if best else None,
        "p95_ms": best.p95_ms if best else None,
        "error_rate": best.error_rate if best else None,
        "reason": reason,
        "found": best is not None and first_bad is not None and not stopped,
        "level": best.level if best else None,
        "first_bad_level": first_bad.level if first_bad else None,
        "max_rps": max((s.rps for s in valid), default=None),
    }
    if best is not None and best.target_rate is not None:
        point["rate"] = best.target_rate
    return point


# -- the search -------------------------------------------------------------------------
def user_cap_for(plan: RunPlan, environments_text: str | None = None) -> int | None:
    """The environment's user cap (None: no cap), read as preflight read it."""
    from stampede.plan.environments import load_environments

    env = load_environments(environments_text).get(plan.environment)
    return env.max_users if env and env.max_users else None


def search(
    plan: RunPlan,
    *,
    stop_probe: Callable[[], str | None] = lambda: None,
    user_cap: int | None = None,
    run_dir: Path | None = None,
) -> RunResult:
    """Run the search with the plan's (first) scenario and its ``search`` block; write results.json.

    Workers must be provisioned (``pipeline.provision_workers``) when ``plan.workers`` > 0.
    """
    from stampede.steps.pipeline import _iso, run_dir_for

    scenario = plan.scenarios[0]
    spec = scenario.search
    if spec is None:
        raise ValueError(f"scenario {scenario.name}: search: missing; fix: add a search block to the scenario")
    open_model = scenario.model == "open"
    run_dir = run_dir or run_dir_for(plan)
    stop_probe = with_allowed_hours(plan, stop_probe)
    cap = None
    if user_cap:
        if open_model and spec.max_users and spec.max_users > user_cap:
            spec = replace(spec, max_users=user_cap)
        elif not open_model and spec.maximum > user_cap:
            log.warning("search: max_users %d clamped to the environment's cap of %d", int(spec.maximum), user_cap)
            cap = float(user_cap)
    levels = plan_levels(spec, cap=cap, whole=not open_model)
    thresholds = dict(scenario.thresholds.items())
    log.info("Breaking-point search on %s: levels %s, %d s each, then %d refinements",
             plan.target, ", ".join(f"{x:g}" for x in levels), spec.step_duration_s, spec.refine_steps)

    steps: list[StepFigures] = []
    stage_rows: list[StageResult] = []
    series: list[dict[str, Any]] = []
    health_all: list[GeneratorHealth] = []
    stopped: str | None = None
    started_at = finished_at = None

    def run_level(level: float, phase: str) -> StepFigures | None:
        nonlocal stopped, started_at, finished_at
        reason = stop_probe()
        if reason:
            stopped = reason
            return None
        index = len(steps) + 1
        step, stage, output, health = _run_step(plan, spec, level, index, phase, run_dir / "steps" / f"{index:02d}",
                                                open_model=open_model, stop_probe=stop_probe)
        started_at = started_at or output.get("started_at")
        finished_at = output.get("finished_at") or finished_at
        series.extend(dict(row, step=index) for row in output.get("series", []))
        health_all.append(health)
        stage_rows.append(stage)
        steps.append(step)
        stopped = stop_request(output.get("stopped")) or stopped
        log.info("step %d (%s): %s → %.1f req/s, p95 %s ms, errors %.2f%% — %s", index, phase, _load(step), step.rps,
                 step.p95_ms, 100 * step.error_rate, "GOOD" if step.good else ("INVALID" if not step.valid else "BAD"))
        return step

    last_good: StepFigures | None = None
    first_bad: StepFigures | None = None

    def judge(step: StepFigures, good_so_far, bad_so_far):
        """Judge a step against the last good one; the new (last good, first bad) pair."""
        step.good, step.reasons = judge_step(step, good_so_far, thresholds, spec.knee_efficiency)
        stage_rows[-1].passed = step.good
        return (step, bad_so_far) if step.good else (good_so_far, step)

    for level in levels:
        step = run_level(level, "step")
        if step is None or stopped:
            break
        if not step.valid:
            break
        last_good, first_bad = judge(step, last_good, first_bad)
        if step is first_bad:
            break

    saturated = any(not s.valid for s in steps)
    if last_good is not None and first_bad is not None and not stopped and not saturated:
        for _ in range(spec.refine_steps):
            middle = bisect_level(last_good.level, first_bad.level, whole=not open_model)
            if middle is None:
                break
            step = run_level(middle, "refine")
            if step is None or stopped or not step.valid:
                break
            last_good, first_bad = judge(step, last_good, first_bad)
    saturated = any(not s.valid for s in steps)

    cap_reached = first_bad is None and bool(steps) and steps[-1].good is True
    generator = _merge_health(health_all)
    stopped_reason = None
    if stopped:
        stopped_reason = f"stopped: {stopped}"
    elif saturated:
        bad_step = next(s for s in steps if not s.valid)
        stopped_reason = (
            f"the load generator, not the target, was the limit at {_load(bad_step)}: "
            f"{generator.advice or 'add workers'}; the breaking point lies above the last good step"
        )
    point = breaking_point_of(steps, cap_reached=cap_reached, stopped=stopped_reason)
    point["user_cap"] = user_cap
    point["max_level_searched"] = max((s.level for s in steps), default=None)

    if stopped or saturated or not steps:
        verdict = "invalid"
    elif last_good is None:
        verdict = "fail"  # already broken at start: the breaking point lies below start
        point["reason"] = f"already broken at the first step ({point['reason']}); lower search.start"
    else:
        verdict = "pass"

    capacity = None
    if not open_model:
        points = [(float(s.users), s.rps) for s in steps if s.valid and s.rps > 0]
        if len({n for n, _ in points}) >= 3:
            try:
                capacity = capacity_from_points(points).to_dict()
            except ValueError:
                capacity = None

    now = finished_at or started_at or 0.0
    result = RunResult(
        run_id=plan.run_id, scenario=plan.scenario_name, target=plan.target, verdict=verdict,  # type: ignore[arg-type]
        started_at=_iso(started_at or now), finished_at=_iso(now), stages=stage_rows, generator=generator,
        environment=plan.environment, run_tag=plan.run_tag, aborted=stopped is not None,
        stopped={"reason": str(stopped), "kind": kind_of(stopped)} if stopped else None,
        series=series, workers=plan.workers,
    )
    result.breaking_point = point
    result.steps = [asdict(s) for s in steps]
    result.capacity = capacity
    write_results(result, run_dir / "results.json")
    log.info("Breaking point: %s", json.dumps(point))
    return result


def _run_step(
    plan: RunPlan, spec: Search, level: float, index: int, phase: str, step_dir: Path, *,
    open_model: bool, stop_probe: Callable[[], str | None],
) -> tuple[StepFigures, StageResult, dict, GeneratorHealth]:
    """One level as one stage on its own master; the run's workers stay connected across steps."""
    scenario = plan.scenarios[0]
    duration = spec.step_duration_s
    if open_model:
        users = int(spec.max_users or 1)
        stage = Stage(name=f"step-{index:02d}", users=users, spawn_rate=float(users), duration_s=duration,
                      rate=level)
    else:
        users = int(level)
        ramp_s = max(1, duration // 4)  # a quarter of the step ramps; the rest is the steady part judged
        stage = Stage(name=f"step-{index:02d}", users=users, spawn_rate=max(1.0, users / ramp_s), duration_s=duration)
    step_plan = replace(plan, scenarios=(replace(scenario, stages=(stage,), search=None),), out_dir=str(step_dir))
    run_dir = step_dir.parents[1]  # steps live in <run dir>/steps/NN, next to the workers' file
    workers = load_worker_set(run_dir) if plan.workers else None
    provider = LocalWorkers()
    run = run_master(
        step_plan, step_dir,
        master_port=workers.master_port if workers else None,
        expect_workers=plan.workers,
        worker_processes=(lambda: provider.processes(workers)) if workers else list,
        stop_probe=stop_probe,
    )
    (step_dir / "generator_samples.json").write_text(json.dumps([s.__dict__ for s in run.samples]))
    output = run.output()
    (result,) = stage_results(output, [s.__dict__ for s in step_plan.stages])
    health, saturated = generator_health(run.samples, output["stages"])
    result.valid = not saturated
    result.name = f"step-{index:02d} ({_level_text(level, open_model)})"
    figures = StepFigures(
        index=index, phase=phase, level=level, users=users, duration_s=result.duration_s,
        requests=result.requests, rps=result.rps, p50_ms=result.p50_ms, p95_ms=result.p95_ms,
        p99_ms=result.p99_ms, error_rate=result.error_rate,
        target_rate=level if open_model else None,
        iterations=getattr(result, "iterations", None), dropped_iterations=getattr(result, "dropped_iterations", None),
        valid=result.valid, generator_cpu_max_pct=health.cpu_max_pct, generator_demand_max_pct=health.demand_max_pct,
        run_dir=str(step_dir),
    )
    if not result.valid:
        figures.reasons = [health.advice]
        result.passed = False
    return figures, result, output, health


def _merge_health(healths: list[GeneratorHealth]) -> GeneratorHealth:
    if not healths:
        return GeneratorHealth()
    worst = max(healths, key=lambda h: (h.saturated, h.demand_max_pct))
    return replace(
        worst,
        cpu_max_pct=max(h.cpu_max_pct for h in healths),
        memory_max_mib=max(h.memory_max_mib for h in healths),
        demand_max_pct=max(h.demand_max_pct for h in healths),
        saturated=any(h.saturated for h in healths),
        processes=max(h.processes for h in healths),
    )


def _level_text(level: float, open_model: bool) -> str:
    return f"{level:g} it/s" if open_model else f"{int(level)} users"


def _load(step: StepFigures) -> str:
    return _level_text(step.level, step.target_rate is not None)
