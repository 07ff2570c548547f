"""Turn the Locust master's output into per-stage figures and generator health.

Every stage is computed from that stage's own requests only (the histograms
the master tagged with the stage), never from Locust's cumulative whole-run
numbers. A stage's ramp is reported apart from its steady part, and the
stage is judged on its steady part when it has one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable

from stampede.core.histogram import LatencyHistogram
from stampede.core.records import GeneratorSample
from stampede.core.records import EndpointResult, GeneratorHealth, PhaseFigures, StageResult

DEFAULT_CPU_LIMIT_PCT = 85.0
SATURATION_WINDOW = 5  # consecutive samples (~1 s apart): a generator must *sit* above the limit


def stage_results(output: dict, planned_stages: list[dict]) -> list[StageResult]:
    results = []
    for index, planned in enumerate(planned_stages):
        stage = output["stages"][index] if index < len(output.get("stages", [])) else {}
        start = stage.get("start")
        ramp_eps = output.get("phases", {}).get(f"{index}/ramp", {})
        steady_eps = output.get("phases", {}).get(f"{index}/steady", {})
        # durations in the whole seconds the master tagged, the same seconds the requests were binned by
        seconds = output.get("phase_seconds", {})
        ramp_s = float(seconds.get(f"{index}/ramp", 0))
        steady_s = float(seconds.get(f"{index}/steady", 0))
        ramp = _phase(ramp_eps, ramp_s)
        steady = _phase(steady_eps, steady_s)
        if steady.requests > 0:
            judged, endpoints, duration = "steady", steady_eps, steady_s
        else:
            judged, endpoints, duration = "whole", _merge_endpoints(ramp_eps, steady_eps), ramp_s + steady_s
        figures = _phase(endpoints, duration)
        histogram = LatencyHistogram.merged(LatencyHistogram(e["histogram"]) for e in endpoints.values())
        results.append(StageResult(
            name=planned["name"],
            scenario=planned.get("scenario", ""),
            users=planned["users"],
            duration_s=round(ramp_s + steady_s, 3),
            requests=figures.requests,
            failures=figures.failures,
            rps=figures.rps,
            p50_ms=figures.p50_ms,
            p95_ms=figures.p95_ms,
            p99_ms=figures.p99_ms,
            max_ms=histogram.max_ms(),
            error_rate=figures.error_rate,
            endpoints=_endpoint_results(endpoints),
            judged_on=judged,
            ramp=ramp if start is not None else None,
            steady=steady if start is not None else None,
            thresholds=dict(planned.get("thresholds") or {}),
            abort_on_breach=bool(planned.get("abort")),
        ))
    _add_iterations(results, output, planned_stages)
    return results


def _add_iterations(results: list[StageResult], output: dict, planned_stages: list[dict]) -> None:
    """Open model: the planned rate, and the iterations started and dropped in the part judged."""
    counts = output.get("iterations") or {}
    for index, (planned, result) in enumerate(zip(planned_stages, results)):
        if planned.get("rate") is None:
            continue
        parts = ("steady",) if result.judged_on == "steady" else ("ramp", "steady")
        pairs = [counts.get(f"{index}/{part}", [0, 0]) for part in parts]
        result.target_rate = float(planned["rate"])
        result.iterations = sum(p[0] for p in pairs)
        result.dropped_iterations = sum(p[1] for p in pairs)


def _phase(endpoints: dict, duration_s: float) -> PhaseFigures:
    histogram = LatencyHistogram.merged(LatencyHistogram(e["histogram"]) for e in endpoints.values())
    requests = histogram.total
    failures = sum(e["failures"] for e in endpoints.values())
    return PhaseFigures(
        duration_s=round(duration_s, 3),
        requests=requests,
        failures=failures,
        rps=round(requests / duration_s, 3) if duration_s > 0 else 0.0,
        p50_ms=histogram.percentile_ms(0.50),
        p95_ms=histogram.percentile_ms(0.95),
        p99_ms=histogram.percentile_ms(0.99),
        error_rate=round(failures / requests, 6) if requests else 0.0,
    )


def _merge_endpoints(*parts: dict) -> dict:
    merged: dict[str, dict] = {}
    for part in parts:
        for name, entry in part.items():
            slot = merged.setdefault(name, {"histogram": LatencyHistogram(), "failures": 0, "errors": {}})
            slot["histogram"].merge(entry["histogram"])
            slot["failures"] += entry["failures"]
            for message, count in entry.get("errors", {}).items():
                slot["errors"][message] = slot["errors"].get(message, 0) + count
    return {name: {**s, "histogram": s["histogram"].to_dict()} for name, s in merged.items()}


def _endpoint_results(endpoints: dict) -> list[EndpointResult]:
    results = []
    for name, entry in sorted(endpoints.items()):
        histogram = LatencyHistogram(entry["histogram"])
        results.append(EndpointResult(
            name=name,
            requests=histogram.total,
            failures=entry["failures"],
            p50_ms=histogram.percentile_ms(0.50),
            p95_ms=histogram.percentile_ms(0.95),
            p99_ms=histogram.percentile_ms(0.99),
            errors=dict(entry.get("errors", {})),
        ))
    return results


def generator_health(
    samples: Iterable[GeneratorSample], stages: list[dict], limit_pct: float | None = None
) -> tuple[GeneratorHealth, set[int]]:
    """Peak CPU/memory of the generators while load ran, and the stages during which one sat above the limit.

    A generator is saturated when what it *wanted* (CPU used plus run-queue wait:
    runnable but no core free) sat above the limit for ``SATURATION_WINDOW``
    consecutive samples. CPU use alone misses a starved generator: sharing a core,
    it gets half of it and shows ~50 % while every timer it sets fires late.
    """
    limit = limit_pct if limit_pct is not None else float(os.environ.get("STAMPEDE_GENERATOR_CPU_LIMIT", DEFAULT_CPU_LIMIT_PCT))
    spans = [(i, s["start"], s["end"]) for i, s in enumerate(stages) if s.get("start") is not None and s.get("end")]
    by_pid: dict[int, list[GeneratorSample]] = {}
    for sample in samples:
        if any(start <= sample.t <= end for _, start, end in spans):
            by_pid.setdefault(sample.pid, []).append(sample)
    cpu_max = mem_max = demand_max = 0.0
    saturated_stages: set[int] = set()
    for pid_samples in by_pid.values():
        pid_samples.sort(key=lambda s: s.t)
        mem_max = max(mem_max, max(s.rss_mib for s in pid_samples))
        cpus = [s.cpu_pct for s in pid_samples]  # plain lists: a 24-hour run has ~86,400 samples per process
        demands = [s.cpu_pct + s.wait_pct for s in pid_samples]
        for i in range(len(pid_samples) - SATURATION_WINDOW + 1):
            # the level it *sat* at over the window
            cpu_max = max(cpu_max, min(cpus[i : i + SATURATION_WINDOW]))
            sustained = min(demands[i : i + SATURATION_WINDOW])
            demand_max = max(demand_max, sustained)
            if sustained > limit:
                last = pid_samples[i + SATURATION_WINDOW - 1].t
                saturated_stages.update(idx for idx, start, end in spans if start <= last <= end)
    generators = _generator_count(by_pid)
    recommended = recommended_workers(generators, demand_max, limit, saturated=bool(saturated_stages))
    health = GeneratorHealth(
        cpu_max_pct=round(cpu_max, 1), memory_max_mib=round(mem_max, 1),
        saturated=bool(saturated_stages), limit_pct=limit, processes=len(by_pid),
        demand_max_pct=round(demand_max, 1), workers=generators, recommended_workers=recommended,
        advice=_advice(generators, demand_max, limit, recommended) if saturated_stages else "",
    )
    return health, saturated_stages


HEADROOM = 0.75  # plan each generator at three quarters of the limit


def recommended_workers(generators: int, demand_pct: float, limit_pct: float, *, saturated: bool) -> int | None:
    """Worker processes that would carry the same load with each under ``HEADROOM`` × the limit.

    A saturated generator's demand is capped by the core it had, so the true demand is
    at least what was measured; at least one more worker is recommended then.
    """
    if generators <= 0 or demand_pct <= 0 or limit_pct <= 0:
        return None
    needed = math.ceil(generators * demand_pct / (HEADROOM * limit_pct))
    return max(needed, generators + 1) if saturated else max(1, needed)


def _generator_count(by_pid: dict[int, list[GeneratorSample]]) -> int:
    """Processes that generated load: the workers, or the single standalone process."""
    workers = sum(1 for samples in by_pid.values() if samples and samples[0].role == "worker")
    return workers or (1 if by_pid else 0)


def _advice(generators: int, demand_pct: float, limit_pct: float, recommended: int | None) -> str:
    more = (recommended or generators + 1) - generators
    cores = os.cpu_count() or 1
    text = (
        f"the load generator, not the target, was the limit: a generator sat at {demand_pct:.0f}% of a core "
        f"(limit {limit_pct:.0f}%); these figures measure the generator. Use {recommended} workers "
        f"({more} more than {generators})"
    )
    if recommended and recommended > cores:
        text += f" on more cores or machines (this one has {cores})"
    return text + ", then run again"
