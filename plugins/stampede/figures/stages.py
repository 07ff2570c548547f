"""Turn the Locust master's output into per-stage figures, and measure what each threshold judges.

Every stage is computed from that stage's own requests only (the histograms
the master tagged with the stage), never from Locust's cumulative whole-run
numbers. A stage's ramp is reported apart from its steady part, and the
stage is judged on its steady part when it has one.

:func:`observe` measures each threshold of a judged stage on that same part, from the exactly
merged histograms: of the whole stage, of one endpoint, of a group of endpoints merged into one
distribution, or of every endpoint a pattern matches; a windowed threshold takes the worst
rolling window the master recorded (``windows`` in its output). Every statistic comes from
:func:`stampede.core.thresholds.request_stat`, the function the mid-run abort uses too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from stampede.core.histogram import LatencyHistogram
from stampede.core.records import EndpointResult, PhaseFigures, StageResult
from stampede.core.thresholds import Measured, Observation, Threshold, request_stat

MAX_NAMES_SHOWN = 6  # endpoints listed in a "no requests to ..." reason


def parse_histograms(output: dict) -> dict:
    """Turn the master's per-phase histograms (JSON: string keys) into :class:`LatencyHistogram` in place, once.

    A day's stage is merged and queried many times (its phases, each endpoint, each threshold);
    parsed once, every merge takes the histogram's fast path instead of converting 10,000 keys again.
    """
    for endpoints in (output.get("phases") or {}).values():
        for entry in endpoints.values():
            if not isinstance(entry["histogram"], LatencyHistogram):
                entry["histogram"] = LatencyHistogram(entry["histogram"])
    return output


def _histogram(entry: Mapping[str, Any]) -> LatencyHistogram:
    histogram = entry["histogram"]
    return histogram if isinstance(histogram, LatencyHistogram) else LatencyHistogram(histogram)


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
        judged = "steady" if steady.requests > 0 else "whole"
        endpoints, duration = judged_endpoints(output, index, judged)
        figures = steady if judged == "steady" else _phase(endpoints, duration)
        maxima = [m for m in (_histogram(e).max_ms() for e in endpoints.values()) if m is not None]
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
            max_ms=max(maxima, default=None),  # the merged histogram's max is the largest endpoint's
            error_rate=figures.error_rate,
            endpoints=_endpoint_results(endpoints, duration),
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
    measured = _measured(endpoints, endpoints, duration_s)
    return PhaseFigures(
        duration_s=round(duration_s, 3),
        requests=measured.requests,
        failures=measured.failures,
        rps=request_stat("rps", measured) or 0.0,
        p50_ms=request_stat("p50", measured),
        p95_ms=request_stat("p95", measured),
        p99_ms=request_stat("p99", measured),
        error_rate=request_stat("error_rate", measured) or 0.0,
    )


def _measured(endpoints: Mapping[str, Any], members: Sequence[str] | Mapping[str, Any], duration_s: float) -> Measured:
    """The requests of ``members`` (endpoint names) merged exactly: the histograms add up."""
    measured = Measured(duration_s=duration_s)
    for name in members:
        entry = endpoints.get(name)
        if entry is not None:
            measured.add(entry["histogram"], entry["failures"])
    return measured


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


def _endpoint_results(endpoints: dict, duration_s: float) -> list[EndpointResult]:
    results = []
    for name, entry in sorted(endpoints.items()):
        measured = _measured(endpoints, (name,), duration_s)
        results.append(EndpointResult(
            name=name,
            requests=measured.requests,
            failures=entry["failures"],
            p50_ms=request_stat("p50", measured),
            p95_ms=request_stat("p95", measured),
            p99_ms=request_stat("p99", measured),
            errors=dict(entry.get("errors", {})),
            p90_ms=request_stat("p90", measured),
            max_ms=request_stat("max", measured),
            mean_ms=request_stat("mean", measured),
            rps=request_stat("rps", measured),
            error_rate=request_stat("error_rate", measured),
        ))
    return results


# -- what each threshold measured ---------------------------------------------------------------------------
def judged_endpoints(output: Mapping[str, Any], index: int, judged_on: str) -> tuple[dict, float]:
    """The per-endpoint histograms of the part a stage is judged on, and its length in seconds."""
    phases = output.get("phases", {})
    seconds = output.get("phase_seconds", {})
    steady_s = float(seconds.get(f"{index}/steady", 0))
    if judged_on == "steady":
        return phases.get(f"{index}/steady", {}), steady_s
    ramp_s = float(seconds.get(f"{index}/ramp", 0))
    return _merge_endpoints(phases.get(f"{index}/ramp", {}), phases.get(f"{index}/steady", {})), ramp_s + steady_s


def observe(output: Mapping[str, Any], index: int, stage: StageResult,
            rules: Sequence[tuple[int, Threshold]]) -> list[Observation]:
    """What each threshold on requests measured on stage ``index``'s judged part (server ones are skipped).

    :param rules: ``(position in the stage's planned table, threshold)``; the position finds the
        threshold's rolling windows in the master's output.
    """
    part = "steady" if stage.judged_on == "steady" else "whole"
    endpoints, duration = judged_endpoints(output, index, stage.judged_on)
    seen = [name for name, entry in endpoints.items() if _histogram(entry).total]
    windows = (output.get("windows") or {}).get(str(index), {})
    found: list[Observation] = []
    merged: dict[tuple[str, ...], Measured] = {}  # each subject merged once, however many thresholds judge it
    for position, rule in rules:
        if rule.server is not None:
            continue
        if rule.window_s:
            found += _windowed(stage.name, position, rule, windows.get(str(position)), part, seen)
            continue
        subjects = [(None, tuple(endpoints))] if rule.endpoints is None else rule.endpoints.subjects(seen, label=rule.name)
        for subject, members in subjects:
            key = tuple(members)
            if key not in merged:
                merged[key] = _measured(endpoints, members, duration)
            measured = replace(merged[key])  # its own iterations below; the histogram is shared, read only
            if rule.endpoints is None:
                measured.iterations, measured.dropped = stage.iterations, stage.dropped_iterations
            # an endpoint with no requests measured nothing, not "0 requests": a misspelt name never passes
            value = rule.value_of(measured) if rule.endpoints is None or measured.requests else None
            reason = "" if value is not None else _no_requests(subject, part, seen)
            found.append(Observation(stage=stage.name, index=position, threshold=rule, subject=subject, value=value,
                                     reason=reason, endpoints=tuple(m for m in members if m in seen)))
    return found


def _windowed(stage: str, position: int, rule: Threshold, entry: Mapping[str, Any] | None, part: str,
              seen: Sequence[str]) -> list[Observation]:
    """The worst rolling window the master recorded, per subject."""
    recorded: Mapping[str, Mapping[str, Any]] = (entry or {}).get(part) or {}
    seconds = int(((entry or {}).get("seconds") or {}).get(part, 0))
    if rule.endpoints is None:
        subjects: list[str | None] = [None]
    elif rule.endpoints.each:
        subjects = sorted(recorded) if rule.endpoints.pattern is not None else list(rule.endpoints.names)
        subjects = subjects or [rule.endpoints.label]
    else:
        subjects = [rule.endpoints.merged_label(rule.name)]
    found = []
    for subject in subjects:
        worst = recorded.get(subject or "") or {}
        value = worst.get("value")
        if value is not None:
            reason = ""
        elif entry is None:
            reason = "the load recorded no rolling windows for it (the master's output has none)"
        elif seconds < (rule.window_s or 0):
            reason = f"the {part} part ({seconds} s) is shorter than one {rule.window_s} s window"
        else:
            reason = _no_requests(subject, part, seen).replace(f"in the {part} part", f"in any {rule.window_s} s window")
        found.append(Observation(stage=stage, index=position, threshold=rule, subject=subject, value=value,
                                 reason=reason, at=worst.get("at")))
    return found


def _no_requests(subject: str | None, part: str, seen: Sequence[str]) -> str:
    if subject is None:
        return f"no requests in the {part} part"
    names = sorted(seen)
    shown = ", ".join(names[:MAX_NAMES_SHOWN]) + (f" and {len(names) - MAX_NAMES_SHOWN} more" if len(names) > MAX_NAMES_SHOWN else "")
    return f"no requests to {subject} in the {part} part (endpoints with requests: {shown or 'none'})"
