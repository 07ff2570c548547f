"""Turn the Locust master's output into per-stage figures.

Every stage is computed from that stage's own requests only (the histograms
the master tagged with the stage), never from Locust's cumulative whole-run
numbers. A stage's ramp is reported apart from its steady part, and the
stage is judged on its steady part when it has one.
"""

from __future__ import annotations

from stampede.core.histogram import LatencyHistogram
from stampede.core.records import EndpointResult, PhaseFigures, StageResult



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
