"""What limits the target, ranked, each finding with the evidence behind it.

Inputs are a run's result (stages with per-endpoint figures, the 1-second
series with users, the generator's health) and the target's own metrics (the
``server_metrics.json`` document, points per series).
The findings, most important first:

- ``generator_saturated``: the load generator, not the target, was the limit
  (everything else in the run is suspect);
- ``resource_saturated``: the first resource to saturate and at what load: CPU
  above ``CPU_SATURATED_PCT`` of a core, the database pool fully in use with
  threads waiting, connections or memory at their configured limit;
- ``memory_growth``: memory that keeps growing through a long stage (a leak?);
- ``latency_growth``: endpoints whose p95 grows fastest with the users (across stages);
- ``errors_under_load``: error types absent at the lowest load, present at higher loads;
- ``slow_endpoint``: an endpoint far slower than the others.

Each finding is a :class:`~stampede.core.records.Finding` (results.json ``bottlenecks[]``).
"""

from __future__ import annotations

import bisect

import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from stampede.core.records import EndpointResult, Finding, RunResult, SeriesPoint, StageResult

__all__ = ["find_bottlenecks"]

CPU_SATURATED_PCT = 90.0  # % of one core: the demo target (one process) cannot use more than a core
SUSTAINED_SAMPLES = 2  # consecutive samples above the line: one spike is not saturation
LIMIT_FRACTION = 0.9  # connections / memory at 90 % of a configured limit count as saturated
MEMORY_MIN_STAGE_S = 60.0  # a leak is judged on stages at least this long
MEMORY_MIN_SLOPE_MIB_PER_MIN = 1.0
MEMORY_MIN_R2 = 0.7
LATENCY_MIN_REQUESTS = 20  # an endpoint's p95 needs this many requests in a stage to count
LATENCY_MIN_RATIO = 1.5
LATENCY_MIN_DELTA_MS = 20.0
SLOW_ENDPOINT_FACTOR = 3.0
SLOW_ENDPOINT_MIN_MS = 50.0


def find_bottlenecks(result: RunResult, server_document: Mapping[str, Any] | None) -> list[Finding]:
    """Ranked findings, ``rank`` 1 first.

    :param server_document: the target's metrics as sampled (``server_metrics.json``), or None.
    """
    loaded = [s for s in result.stages if s.requests]
    timeline = _Timeline(result.series)
    findings: list[Finding] = []
    generator = result.generator
    if generator.saturated:
        findings.append(Finding(
            "generator_saturated", "load generator", "The load generator was the limit, not the target",
            [f"generator CPU sat at {generator.cpu_max_pct:.0f} % (limit {generator.limit_pct:.0f} %)",
             "response times include the generator's own delay: add workers and run again"],
            score=200,
        ))
    findings += _saturations(server_document, timeline, loaded)
    findings += _memory_growth(server_document, timeline, result.stages)
    findings += _latency_growth(loaded)
    findings += _errors_under_load(loaded)
    if not any(f.kind == "latency_growth" for f in findings):
        findings += _slow_endpoints(loaded)
    findings.sort(key=lambda f: (-f.score, f.at_s if f.at_s is not None else float("inf"), f.subject))
    for rank, finding in enumerate(findings, 1):
        finding.rank = rank
    return findings


class _Timeline:
    """Users and stage at a moment of the run, from the 1-second series."""

    def __init__(self, series: Sequence[SeriesPoint]) -> None:
        points = [(int(p.t), p) for p in series]
        if any(a[0] > b[0] for a, b in zip(points, points[1:])):  # the series comes sorted: a day's sort saved
            points.sort(key=lambda x: x[0])
        self.points = points
        self.seconds = [second for second, _ in self.points]
        self.t0 = self.points[0][0] if self.points else None

    def stages_at(self, times: Sequence[float]) -> list[str | None]:
        """The stage at each of ``times`` (as :meth:`at` names it), all at once."""
        if not self.points:
            return [None] * len(times)
        names = [p.stage for _, p in self.points]
        return [names[max(0, bisect.bisect_right(self.seconds, t) - 1)] for t in times]

    def at(self, t: float) -> tuple[int | None, str | None, float | None]:
        # a bisection, not a scan: a day's memory series asks once per sample (43,000 times) of 86,400 seconds
        if not self.points:
            return None, None, None
        index = bisect.bisect_right(self.seconds, t) - 1
        best = self.points[max(0, index)][1]
        # users as sampled at the start of a second lag the scrape: take the most in the second around t
        lo, hi = bisect.bisect_left(self.seconds, t - 1), bisect.bisect_right(self.seconds, t + 1)
        near = [p.users or 0 for _, p in self.points[lo:hi]]
        return max(near, default=best.users), best.stage, round(t - self.t0, 1)


def _by_role(server: Mapping[str, Any] | None, role: str) -> list[tuple[str, dict]]:
    series = (server or {}).get("series") or {}
    return [(name, entry) for name, entry in series.items() if entry.get("role") == role and entry.get("points")]


def _first_sustained(points: Sequence[Sequence[float]], test) -> float | None:
    run = 0
    for index, (t, value) in enumerate(points):
        run = run + 1 if test(t, value) else 0
        if run >= SUSTAINED_SAMPLES:
            return points[index - run + 1][0]
    return None


def _where(timeline: _Timeline, t: float) -> tuple[int | None, float | None, str]:
    users, stage, at_s = timeline.at(t)
    place = f"{at_s:.0f} s into the run" if at_s is not None else "during the run"
    if users is not None:
        place += f", {users} users"
    if stage:
        place += f", stage {stage}"
    return users, at_s, place


def _saturations(server: Mapping[str, Any] | None, timeline: _Timeline,
                 stages: list[StageResult]) -> list[Finding]:
    found: list[tuple[float, Finding]] = []
    for name, entry in _by_role(server, "cpu"):
        t = _first_sustained(entry["points"], lambda _t, v: v > CPU_SATURATED_PCT)
        if t is not None:
            users, at_s, place = _where(timeline, t)
            peak = max(v for _, v in entry["points"])
            found.append((t, Finding("resource_saturated", name, f"CPU saturated ({name})", [
                f"{name} above {CPU_SATURATED_PCT:.0f} % of a core from {place}; peak {peak:.0f} %",
            ], at_users=users, at_s=at_s)))
    found += _pool_saturation(server, timeline, stages)
    for role in ("connections", "memory"):
        for name, entry in _by_role(server, role):
            limit = entry.get("limit")
            if not limit:
                continue
            t = _first_sustained(entry["points"], lambda _t, v, limit=limit: v >= LIMIT_FRACTION * limit)
            if t is not None:
                users, at_s, place = _where(timeline, t)
                found.append((t, Finding("resource_saturated", name, f"{name} at its limit", [
                    f"{name} reached {LIMIT_FRACTION:.0%} of its limit {limit:g} from {place}",
                ], at_users=users, at_s=at_s)))
    found.sort(key=lambda x: x[0])
    out = []
    for order, (_, finding) in enumerate(found):
        finding.score = 100 - 10 * order  # the first resource to saturate ranks highest
        if order == 0:
            title = finding.title if finding.title[:2].isupper() else finding.title[0].lower() + finding.title[1:]
            finding.title = "First resource to saturate: " + title  # "CPU saturated" keeps its capitals
        out.append(finding)
    return out


def _pool_saturation(server: Mapping[str, Any] | None, timeline: _Timeline,
                     stages: list[StageResult]) -> list[tuple[float, Finding]]:
    sizes, in_use, waiting = (_by_role(server, r) for r in ("pool_size", "pool_in_use", "pool_waiting"))
    if not in_use or not waiting:
        return []
    size_at = dict((round(t, 3), v) for t, v in sizes[0][1]["points"]) if sizes else {}
    waiting_at = dict((round(t, 3), v) for t, v in waiting[0][1]["points"])
    events = []
    for t, used in in_use[0][1]["points"]:
        size = size_at.get(round(t, 3))
        wait = waiting_at.get(round(t, 3), 0.0)
        if size and used >= size and wait > 0:
            events.append((t, used, size, wait))
    if not events:
        return []
    t, used, size, _ = events[0]
    users, at_s, place = _where(timeline, t)
    max_wait = max(e[3] for e in events)
    samples = len(in_use[0][1]["points"])
    evidence = [
        f"database pool fully in use ({used:.0f}/{size:.0f}) with threads waiting from {place}",
        f"saturated in {len(events)} of {samples} samples; up to {max_wait:.0f} threads waiting for a connection",
    ]
    pool_errors = sum(
        count for s in stages for e in s.endpoints for message, count in e.errors.items() if "pool" in message.lower()
    )
    if pool_errors:
        evidence.append(f"{pool_errors} requests failed with 'database pool exhausted'")
    return [(t, Finding("resource_saturated", "database pool", "Database connection pool exhausted",
                        evidence, at_users=users, at_s=at_s))]


def _linear_fit(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float]:
    """Slope and R² of a least-squares line."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0, 0.0
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    slope = sxy / sxx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (my + slope * (x - mx))) ** 2 for x, y in zip(xs, ys))
    return slope, (1 - ss_res / ss_tot) if ss_tot else 0.0


def _memory_growth(server: Mapping[str, Any] | None, timeline: _Timeline,
                   stages: list[StageResult]) -> list[Finding]:
    out = []
    for name, entry in _by_role(server, "memory"):
        points = entry["points"]
        stage_of = timeline.stages_at([t for t, _ in points])  # once per sample, not once per sample and stage
        for stage in stages:
            duration = stage.steady.duration_s if stage.steady and stage.steady.duration_s else stage.duration_s
            if duration < MEMORY_MIN_STAGE_S:
                continue
            inside = [(t, v) for (t, v), name in zip(points, stage_of) if name == stage.name]
            if len(inside) < 10:
                continue
            xs = [(t - inside[0][0]) / 60 for t, _ in inside]
            slope, r2 = _linear_fit(xs, [v for _, v in inside])
            if slope >= MEMORY_MIN_SLOPE_MIB_PER_MIN and r2 >= MEMORY_MIN_R2:
                users, at_s, _ = _where(timeline, inside[0][0])
                out.append(Finding("memory_growth", name, f"Memory keeps growing in stage {stage.name}", [
                    f"{name} grew {slope:.1f} {entry.get('unit') or ''}/min for {duration / 60:.0f} min "
                    f"(R² {r2:.2f}), from {inside[0][1]:.0f} to {inside[-1][1]:.0f}: a leak is likely",
                ], score=70, at_users=users, at_s=at_s))
    return out


def _latency_growth(stages: list[StageResult]) -> list[Finding]:
    if len({s.users for s in stages}) < 2:
        return []
    by_endpoint: dict[str, list[tuple[int, float, str]]] = {}
    for stage in stages:
        for e in _measured_endpoints(stage):
            by_endpoint.setdefault(e.name, []).append((stage.users, e.p95_ms, stage.name))
    growth = []
    for name, points in by_endpoint.items():
        if len({u for u, _, _ in points}) < 2:
            continue
        points.sort()
        slope, _ = _linear_fit([u for u, _, _ in points], [p for _, p, _ in points])
        low, high = points[0], points[-1]
        ratio = high[1] / low[1] if low[1] > 0 else float("inf")
        if slope > 0 and ratio >= LATENCY_MIN_RATIO and high[1] - low[1] >= LATENCY_MIN_DELTA_MS:
            growth.append((slope, name, low, high, ratio))
    growth.sort(reverse=True)
    out = []
    for order, (slope, name, low, high, ratio) in enumerate(growth[:5]):
        out.append(Finding("latency_growth", name, f"{name} slows down fastest with load" if order == 0
                           else f"{name} slows down with load", [
            f"p95 {low[1]:.0f} ms at {low[0]} users ({low[2]}) → {high[1]:.0f} ms at {high[0]} users ({high[2]}): "
            f"×{ratio:.1f}, +{slope * 100:.1f} ms per 100 users",
        ], score=60 - 2 * order, at_users=high[0]))
    return out


def _errors_under_load(stages: list[StageResult]) -> list[Finding]:
    if len({s.users for s in stages}) < 2:
        return []
    ordered = sorted(stages, key=lambda s: s.users)
    lowest = ordered[0]
    quiet = {m for e in lowest.endpoints for m in e.errors}
    first_seen: dict[str, tuple[int, str, int, set]] = {}
    for stage in ordered[1:]:
        for e in stage.endpoints:
            for message, count in e.errors.items():
                if message in quiet:
                    continue
                users, name, total, endpoints = first_seen.get(message, (stage.users, stage.name, 0, set()))
                endpoints.add(e.name)
                first_seen[message] = (users, name, total + count, endpoints)
    out = []
    for message, (users, name, total, endpoints) in sorted(first_seen.items(), key=lambda x: -x[1][2])[:3]:
        out.append(Finding("errors_under_load", message[:120], "Errors that appear only under load", [
            f"{total} × {message[:200]!r} on {', '.join(sorted(endpoints))}; none at {lowest.users} users "
            f"({lowest.name}), first at {users} users ({name})",
        ], score=55, at_users=users))
    return out


def _slow_endpoints(stages: list[StageResult]) -> list[Finding]:
    out = []
    for stage in stages:
        endpoints = _measured_endpoints(stage)
        if len(endpoints) < 3:
            continue
        median = statistics.median(e.p95_ms for e in endpoints)
        for e in sorted(endpoints, key=lambda e: -e.p95_ms)[:2]:
            if e.p95_ms >= max(SLOW_ENDPOINT_FACTOR * median, SLOW_ENDPOINT_MIN_MS):
                out.append(Finding("slow_endpoint", e.name, f"{e.name} is much slower than the others", [
                    f"p95 {e.p95_ms:.0f} ms in {stage.name} ({stage.users} users) vs a median of "
                    f"{median:.0f} ms over {len(endpoints)} endpoints (×{e.p95_ms / median:.1f})"
                    if median else f"p95 {e.p95_ms:.0f} ms in {stage.name}",
                ], score=40, at_users=stage.users))
    seen, unique = set(), []
    for f in out:
        if f.subject not in seen:
            seen.add(f.subject)
            unique.append(f)
    return unique


def _measured_endpoints(stage: StageResult) -> list[EndpointResult]:
    """The stage's endpoints with a p95 over enough requests to compare."""
    return [e for e in stage.endpoints if e.p95_ms is not None and e.requests >= LATENCY_MIN_REQUESTS]
