"""Step 5, validate: per-stage figures, generator health and the Great Expectations verdict.

Reads what the load step left (``locust_output.json``, ``generator_samples.json``,
``server_metrics.json``) and writes the first ``results.json``. A stage is judged on its
steady part from the exactly merged histograms; a stage during which a generator saturated is
invalid; a stage that never started is ``not_run``; a ramp-down is reported, not judged.

Each judged stage is held to its planned threshold table: every threshold is measured on the
stage's judged part (per endpoint, group or pattern; the worst rolling window; the server's
samples) and Great Expectations judges the values. A threshold that could not be judged is
reported as such (``checks[].judged`` false, with the reason) and fails its stage unless it is
optional. The verdict comes from :func:`stampede.core.verdict.verdict_of`.
"""

from __future__ import annotations

from datetime import datetime, timezone

from stampede.analysis.capacity import capacity_of_stages
from stampede.analysis.expectations import apply_outcome, validate_stages
from stampede.core.paths import Artifact
from stampede.core.records import Breach, RunResult, SeriesPoint, StageResult, Stop, collector_paused, from_dict
from stampede.core.thresholds import Observation, Threshold
from stampede.core.verdict import verdict_of
from stampede.figures import server as server_figures
from stampede.figures.generator import generator_health
from stampede.figures.stages import observe, parse_histograms, stage_results
from stampede.plan.run_plan import PlannedStage, RunPlan
from stampede.steps.folder import folder_of
from stampede.steps.run_stages import recover_output


@collector_paused()  # a day held in memory: its million objects are not scanned again and again
def validate(plan: RunPlan) -> RunResult:
    folder = folder_of(plan)
    output = folder.read_json(Artifact.LOCUST_OUTPUT)
    if output is None:  # the load step died with its master: what the master streamed, if anything
        output = recover_output(folder, None)
    if output is None:
        raise FileNotFoundError(f"validate: no {Artifact.LOCUST_OUTPUT} in {folder.path}; the load step did not finish")
    samples = folder.read_json(Artifact.GENERATOR_SAMPLES, default=[])  # rows: judged as columns
    result = judge(plan, output, samples, folder.read_json(Artifact.SERVER_METRICS))
    folder.write_results(result)
    return result


def judge(plan: RunPlan, output: dict, samples: list[GeneratorSample] | list[dict], document: dict | None) -> RunResult:
    """The run's results from the master's output (or the one rebuilt from its stream), judged."""
    parse_histograms(output)
    stages = stage_results(output, [s.__dict__ for s in plan.stages])
    health, saturated = generator_health(samples, output["stages"])
    for index in saturated:
        stages[index].valid = False
    judged = mark_judged_parts(stages, output, plan)
    outcome = validate_stages(judged, observations_of(stages, judged, output, plan.stages, document))
    apply_outcome(judged, outcome)
    stop = from_dict(Stop, output["stopped"]) if output.get("stopped") else None
    result = RunResult(
        run_id=plan.run_id, scenario=plan.scenario_name, target=plan.target,
        verdict=verdict_of(judged=[s.passed for s in judged], stop=stop.kind if stop else None,
                           saturated=health.saturated),
        started_at=iso(output["started_at"]), finished_at=iso(output["finished_at"]),
        stages=stages, generator=health, environment=plan.environment, run_tag=plan.run_tag,
        aborted=stop is not None, stopped=stop, breaches=[from_dict(Breach, b) for b in output.get("breaches", [])],
        series=[SeriesPoint(**row) for row in output.get("series", [])], workers=plan.workers, owner_grace_s=plan.owner_grace_s,
        validation=outcome.gx_result,
        figures_source=output.get("figures_source") or "master", figures_note=output.get("figures_note") or "",
    )
    result.cleanup.created = sum(output.get("created", {}).values())
    result.capacity = capacity_of_stages(judged)  # three or more user levels: fit the USL
    return result


def mark_judged_parts(stages: list[StageResult], output: dict, plan: RunPlan) -> list[StageResult]:
    """Which stages are judged: those that started and raise (or hold) the load; the rest say why not."""
    ran = [s for s, o in zip(stages, output["stages"]) if o.get("start") is not None]
    for stage in stages:
        if stage not in ran:  # never started: the run stopped before it
            stage.passed, stage.judged_on = False, "not_run"
    for stage, planned in zip(stages, plan.stages):
        if stage in ran and not planned.judged:
            stage.judged_on = "ramp_down"  # reported, not held to the thresholds
    judged = [s for s in ran if s.judged_on != "ramp_down"]
    for stage in judged:
        if stage.judged_on == "whole":  # all ramp, no steady part: throughput is still climbing
            stage.thresholds.pop("min_rps", None)
    return judged


def observations_of(stages: list[StageResult], judged: list[StageResult], output: dict,
                    planned: list[PlannedStage], document: dict | None) -> dict[str, list[Observation]]:
    """What every threshold of every judged stage measured, by stage name."""
    found: dict[str, list[Observation]] = {}
    for index, (stage, plan_stage) in enumerate(zip(stages, planned)):
        if stage not in judged:
            continue
        rules = table_for(stage, plan_stage)
        timing = output["stages"][index]
        part = "steady" if stage.judged_on == "steady" else "whole"
        start = timing.get("steady_from") if part == "steady" else timing.get("start")
        end = timing.get("end") or output.get("finished_at") or start
        found[stage.name] = observe(output, index, stage, rules) + server_figures.observe(
            document, stage.name, rules, start=float(start or 0), end=float(end or 0), part=part)
        found[stage.name].sort(key=lambda o: o.index)
    return found


def table_for(stage: StageResult, planned: PlannedStage) -> list[tuple[int, Threshold]]:
    """``(position, threshold)`` the stage is held to: its planned table, less the throughput floors
    on a stage judged whole (all ramp, no steady part: throughput is still climbing)."""
    return [(position, rule) for position, rule in enumerate(planned.threshold_table)
            if not (stage.judged_on == "whole" and rule.is_throughput_floor)]


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")
