"""Step 4 of the breaking-point DAG: the search, each level a level of the same load step.

Every level runs through :func:`stampede.steps.run_stages.run_level` (the same
master, guards, server metrics and health checks as a staged run), into its own
sub-folder ``steps/NN``; :class:`stampede.analysis.breaking_point.BreakingPointSearch`
decides the levels (step up, refine) and the point (summarise). The search's
results.json has a row in ``stages`` and in ``steps`` for every level, the
``breaking_point`` and the USL ``capacity`` model.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import replace
from typing import Any

from stampede.analysis.breaking_point import BreakingPointSearch, SearchOutcome, level_text
from stampede.core.paths import Artifact
from stampede.core.records import GeneratorHealth, RunResult, SeriesPoint, StageResult, StepFigures, Stop
from stampede.core.stops import StopProbe, StopRequest, never
from stampede.figures.generator import generator_health
from stampede.figures.stages import stage_results
from stampede.load.stage_events import StageEvents
from stampede.plan.environments import load_environments
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import Scenario, Stage
from stampede.safety.hours import with_allowed_hours
from stampede.steps.folder import folder_of
from stampede.steps.run_stages import run_level, stop_of
from stampede.steps.validate import iso

log = logging.getLogger(__name__)


def user_cap_for(plan: RunPlan, environments_text: str | None = None) -> int | None:
    """The environment's user cap (None: no cap), read as preflight read it."""
    env = load_environments(environments_text).get(plan.environment)
    return env.max_users if env and env.max_users else None


def level_stage(scenario: Scenario, level: float, index: int) -> Stage:
    """One level as one stage: a quarter of it ramps, the rest is the steady part judged."""
    spec = scenario.search
    duration = spec.step_duration_s
    if scenario.model == "open":
        users = int(spec.max_users or 1)
        return Stage(name=f"step-{index:02d}", users=users, spawn_rate=float(users), duration_s=duration, rate=level)
    users = int(level)
    ramp_s = max(1, duration // 4)
    return Stage(name=f"step-{index:02d}", users=users, spawn_rate=max(1.0, users / ramp_s), duration_s=duration)


class _Levels:
    """Runs the levels for the search and keeps what the results need beside the step figures."""

    def __init__(self, plan: RunPlan, stop_probe: StopProbe) -> None:
        self.plan = plan
        self.stop_probe = stop_probe
        self.scenario = plan.scenarios[0]
        self.open_model = self.scenario.model == "open"
        self.stages: list[StageResult] = []
        self.series: list[SeriesPoint] = []
        self.healths: list[GeneratorHealth] = []
        self.started_at: float | None = None
        self.finished_at: float | None = None

    def __call__(self, level: float, phase: str, index: int) -> tuple[StepFigures, StopRequest | None] | None:
        request = self.stop_probe()
        if request is not None:
            return None
        level_folder = folder_of(self.plan).sub(f"{Artifact.STEPS}/{index:02d}")
        level_folder.path.mkdir(parents=True, exist_ok=True)
        level_plan, output, samples = run_level(self.plan, level_stage(self.scenario, level, index), level_folder,
                                                stop_probe=self.stop_probe)
        step = self.step_of(output, [s.__dict__ for s in level_plan.stages], 0, samples, level=level, phase=phase,
                            index=index, run_dir=str(level_folder.path))
        self.started_at = self.started_at or output.get("started_at")
        self.finished_at = output.get("finished_at") or self.finished_at
        self.series.extend(SeriesPoint(**row, step=index) for row in output.get("series", []))
        return step, stop_of(output)

    def step_of(self, figures: dict, planned: list[dict], slot: int, samples: list, *, level: float, phase: str,
                index: int, run_dir: str) -> StepFigures:
        """The figures of the stage ``slot`` of ``figures`` as step ``index``, judged valid on its generators."""
        stage = stage_results(figures, planned)[slot]
        record = figures["stages"][slot]
        health, saturated = generator_health(samples, [{**record, "index": 0}])
        stage.valid = not saturated
        stage.name = f"step-{index:02d} ({level_text(level, open_model=self.open_model)})"
        step = StepFigures(
            index=index, phase=phase, level=level, users=stage.users, duration_s=stage.duration_s,
            requests=stage.requests, rps=stage.rps, p50_ms=stage.p50_ms, p95_ms=stage.p95_ms, p99_ms=stage.p99_ms,
            error_rate=stage.error_rate, target_rate=level if self.open_model else None,
            iterations=stage.iterations, dropped_iterations=stage.dropped_iterations, valid=stage.valid,
            generator_cpu_max_pct=health.cpu_max_pct, generator_demand_max_pct=health.demand_max_pct,
            run_dir=run_dir,
        )
        if not stage.valid:
            step.reasons = [health.advice]
            stage.passed = False
        self.healths.append(health)
        self.stages.append(stage)
        log.info("step %d (%s): %s → %.1f req/s, p95 %s ms, errors %.2f%%", index, phase,
                 level_text(level, open_model=self.open_model), step.rps, step.p95_ms, 100 * step.error_rate)
        return step

    def merged_health(self) -> GeneratorHealth:
        if not self.healths:
            return GeneratorHealth()
        worst = max(self.healths, key=lambda h: (h.saturated, h.demand_max_pct))
        return replace(
            worst,
            cpu_max_pct=max(h.cpu_max_pct for h in self.healths),
            memory_max_mib=max(h.memory_max_mib for h in self.healths),
            demand_max_pct=max(h.demand_max_pct for h in self.healths),
            saturated=any(h.saturated for h in self.healths),
            processes=max(h.processes for h in self.healths),
        )


class _OneMaster:
    """The search's steps on one Locust master (closed model): no master starts per step.

    The master plays the first level, then pauses (no users) at each step's end until the step's
    figures are complete (``stages_so_far.json`` and the stage-end line). The search, in a thread of
    its own, judges them by the same rules as ever and writes the next level, or the end, into the
    control file (``search_control.json``) the master polls; the master's stages are slots planned
    up front, so its wall-clock limit and the step count are bounded before it starts. The supervisor
    (kill switch, owner heartbeat, egress guard, health checks) stays in the main thread, as for any load.
    """

    def __init__(self, levels: _Levels, search: BreakingPointSearch) -> None:
        self.levels = levels
        self.search = search
        plan, scenario = levels.plan, levels.scenario
        self.folder = folder_of(plan).sub(Artifact.STEPS)
        self.folder.path.mkdir(parents=True, exist_ok=True)
        (self.folder.path / Artifact.SEARCH_CONTROL).unlink(missing_ok=True)
        steps = search.levels()
        top = max(steps)
        # slot 0 is the first level; the others are played at the level the search sends (never above
        # the top, which is what the plan, the caps and the wall-clock limit are sized for)
        self.slots = [level_stage(scenario, steps[0], 1)] + [
            replace(level_stage(scenario, top, n), live=True) for n in range(2, len(steps) + search.spec.refine_steps + 1)
        ]
        slotted = replace(plan, scenarios=(replace(scenario, stages=tuple(self.slots), search=None),))
        self.planned = [dict(s.__dict__) for s in slotted.stages]  # as the master plays them (thresholds too)
        self.samples: list = []
        self.ended: queue.Queue[int] = queue.Queue()
        self.events = StageEvents(on_stage_end=self.ended.put)
        self.output: dict | None = None
        self.master_done = threading.Event()
        self.error: BaseException | None = None

    def on_line(self, line: str) -> None:
        log.info(line)
        self.events.on_line(line)

    def __call__(self, level: float, phase: str, index: int) -> tuple[StepFigures, StopRequest | None] | None:
        """Step ``index`` (1-based) at ``level``: sent to the paused master, its figures once complete."""
        slot = index - 1
        if slot >= len(self.slots) or self.levels.stop_probe() is not None or self.master_done.is_set():
            return None
        if slot > 0:
            stage = level_stage(self.levels.scenario, level, index)
            word = {"index": slot, "name": stage.name, "users": stage.users, "spawn_rate": stage.spawn_rate}
            self.planned[slot].update(word)
            self._write_word(word)
        figures = self._wait_for(slot)
        if figures is None:
            return None
        step = self.levels.step_of(figures, self.planned, slot, list(self.samples), level=level, phase=phase,
                                   index=index, run_dir=str(self.folder.path))
        return step, stop_of(figures)

    def _wait_for(self, slot: int) -> dict | None:
        """The figures once step ``slot`` is complete, or what the master left when it ended first."""
        while True:
            try:
                if self.ended.get(timeout=0.2) == slot:
                    return self.folder.read_json(Artifact.STAGES_SO_FAR)
            except queue.Empty:
                pass
            if self.master_done.is_set():
                output = self.output or {}
                stages = output.get("stages") or []
                played = slot < len(stages) and stages[slot].get("start") is not None
                return output if played else None

    def _write_word(self, word: dict) -> None:
        path = self.folder.path / Artifact.SEARCH_CONTROL
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(word))
        tmp.replace(path)

    def _search(self) -> None:
        try:
            self.outcome = self.search.run()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            self.error = exc
        finally:
            self._write_word({"index": len(self.search.steps), "end": True})  # the master ends its load

    def run(self) -> SearchOutcome:
        thread = threading.Thread(target=self._search, name="stampede-search", daemon=True)
        thread.start()
        try:
            _, output, _ = run_level(self.levels.plan, tuple(self.slots), self.folder,
                                              stop_probe=self.levels.stop_probe, on_line=self.on_line,
                                              samples=self.samples)
            self.output = output
        finally:
            self.master_done.set()
            thread.join(timeout=60)
        if self.error is not None:
            raise self.error
        self.levels.started_at = output.get("started_at")
        self.levels.finished_at = output.get("finished_at")
        # a second of a step is named after it (step-NN); the pauses between steps belong to none
        self.levels.series.extend(SeriesPoint(**row, step=int(str(row["stage"]).split("-")[1]))
                                  for row in output.get("series", []) if str(row.get("stage")).startswith("step-"))
        return self.outcome


def search_breaking_point(plan: RunPlan, *, stop_probe: StopProbe = never, user_cap: int | None = None) -> RunResult:
    """Run the search with the plan's (first) scenario and its ``search`` block; write results.json.

    Workers must be provisioned (``stampede.steps.provision``) when ``plan.workers`` > 0.
    """
    scenario = plan.scenarios[0]
    spec = scenario.search
    if spec is None:
        raise ValueError(f"scenario {scenario.name}: search: missing; fix: add a search block to the scenario")
    open_model = scenario.model == "open"
    if user_cap and open_model and spec.max_users and spec.max_users > user_cap:
        spec = replace(spec, max_users=user_cap)
        plan = replace(plan, scenarios=(replace(scenario, search=spec),))
    levels = _Levels(plan, with_allowed_hours(plan, stop_probe))
    search = BreakingPointSearch(spec=spec, thresholds=dict(scenario.thresholds.items()), run_level=levels,
                                 open_model=open_model, user_cap=user_cap,
                                 advice=lambda: levels.merged_health().advice or "add workers")
    log.info("Breaking-point search on %s: levels %s, %d s each, then %d refinements", plan.target,
             ", ".join(f"{x:g}" for x in search.levels()), spec.step_duration_s, spec.refine_steps)
    if open_model:  # the open model's arrivals run per stage: a master per level
        outcome = search.run()
    else:
        one_master = _OneMaster(levels, search)
        search.run_level = one_master
        outcome = one_master.run()
    for stage, step in zip(levels.stages, outcome.steps):
        if step.good is not None:
            stage.passed = step.good
    result = _result(plan, outcome, levels)
    folder_of(plan).write_results(result)
    log.info("Breaking point: %s", outcome.breaking_point)
    return result


def _result(plan: RunPlan, outcome: SearchOutcome, levels: _Levels) -> RunResult:
    now = levels.finished_at or levels.started_at or 0.0
    stop = outcome.stop
    extra: dict[str, Any] = {}
    if stop is not None:
        extra["stopped"] = Stop(reason=stop.reason, kind=stop.kind)
    return RunResult(
        run_id=plan.run_id, scenario=plan.scenario_name, target=plan.target, verdict=outcome.verdict,
        started_at=iso(levels.started_at or now), finished_at=iso(now), stages=levels.stages,
        generator=levels.merged_health(), environment=plan.environment, run_tag=plan.run_tag,
        aborted=stop is not None, series=levels.series, workers=plan.workers,
        breaking_point=outcome.breaking_point, steps=outcome.steps, capacity=outcome.capacity, **extra,
    )
