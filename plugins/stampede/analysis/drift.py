"""What only time shows: drift over a long stage, with the hour it started and its evidence.

Three kinds, each judged on one long stage (an endurance soak) at a time:

- **latency**: p50, p95 or p99 (of all requests, and of each endpoint) rising interval over interval.
  Each interval's percentiles come from the exactly merged histograms the master binned per
  interval (``intervals`` in its output, :mod:`stampede.load.intervals`), never from averaged
  percentiles.
- **errors**: a burst, a run of windows whose error rate is far above the stage's own rate
  (a Poisson tail of less than one in a million, at least five times the rate and one point above it).
- **server**: the target's memory, connections or pool in use (``server_metrics.json``)
  growing and not falling back.

A trend is a *hinge*: flat, then rising from some interval on (the least-squares fit over every
start). It is reported only when all of these hold, so a flat, noisy day says nothing:

- at least :data:`MIN_RISING_INTERVALS` intervals after its start, rising by Mann-Kendall's test
  (z at least :data:`MIN_TREND_Z`) with a positive Theil-Sen slope;
- the rise (the Theil-Sen line at the stage's end against the level before the start) is at
  least a minimum effect (:data:`LATENCY_MIN_RISE`, :data:`SERVER_MIN_RISE`) and four times the noise
  (the scatter of the points around the fit);
- the last interval is still at least half the rise above the level before: it did not fall back.

Drift is a **warning**: it is shown in the report and in Slack next to each stage's verdict, and never
changes the verdict (a threshold does that; a drift finding only says where to look).
Intervals are hours for a stage of 12 h or more (``stampede.core.thresholds.drift_interval_s``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stampede.core import fmt
from stampede.core.histogram import coarse_width
from stampede.core.records import Drift, DriftFinding, SeriesPoint, StageResult
from stampede.core.thresholds import DRIFT_HOUR_S, drift_interval_s

__all__ = ["find_drift", "Rise", "rise_of", "ALL_REQUESTS"]

ALL_REQUESTS = "all requests"
PERCENTILES = (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99))
MIN_TAIL_REQUESTS = 20  # an interval's p99 needs 2,000 requests, its p95 400: fewer, and it is not judged
MIN_COVERED = 0.5  # an interval the stage ran less than half of (its last, cut short) is left out
MIN_RISING_INTERVALS = 6  # a trend is seen over six intervals at least (Mann-Kendall cannot say more with fewer)
MIN_TREND_Z = 2.5  # Mann-Kendall z over the rising part: one-sided p < 0.006
NOISE_FACTOR = 4.0  # the rise is at least four times the points' scatter around the fit
FALL_BACK = 0.5  # the last interval keeps at least half the rise, or it fell back
LATENCY_MIN_RISE = (0.20, 2.0)  # (fraction of the level before, ms): a percentile 20 % and 2 ms higher
SERVER_MIN_RISE = {"memory": (0.10, 5.0), "connections": (0.20, 2.0), "pool_in_use": (0.20, 2.0)}
SERVER_ROLES = tuple(SERVER_MIN_RISE)
MIN_POINTS_PER_INTERVAL = 3
SERVER_BINS_PER_INTERVAL = 4  # the target's metrics are fitted on quarter intervals (quarter hours over a day)
BURST_FACTOR = 5.0  # a burst's error rate is at least five times the stage's ...
BURST_MIN_EXCESS = 0.01  # ... and one point above it
BURST_MIN_FAILURES = 10
BURST_LOG_P = math.log(1e-6)  # Poisson upper tail (Chernoff bound) of the window's failures at the stage's rate
BASELINE_FLOOR = 1e-4  # a stage without failures still needs a real burst to call one
MAX_ENDPOINT_FINDINGS = 8  # per stage; the rest are counted in the note
MAX_BURSTS = 5  # per stage, the largest


# -- the trend test --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rise:
    """A hinge trend found in per-interval values: flat up to ``start`` (in intervals), rising after it."""

    start: float  # where the rise starts, in intervals from the stage's start (5.0: at the start of the sixth)
    before: float  # the level before (median of the intervals before, or the fit's level at the start)
    end: float  # the Theil-Sen line at the last interval
    slope: float  # per interval
    z: float  # Mann-Kendall over the rising part
    intervals: int  # how many intervals rose
    noise: float

    @property
    def rise(self) -> float:
        return self.end - self.before


def rise_of(values: Sequence[float | None], *, min_fraction: float, min_abs: float) -> Rise | None:
    """The hinge trend of ``values`` (one per interval, ``None`` where not measured), or None when it
    does not pass every test of the module docstring."""
    ys = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    xs = np.arange(len(ys), dtype=float) + 0.5  # interval centres
    keep = ~np.isnan(ys)
    xs, ys = xs[keep], ys[keep]
    if len(ys) < MIN_RISING_INTERVALS:
        return None
    # every start on a tenth of an interval, fitted at once: a creep that begins at 05:00 shows in hour 5
    # by half an hour's worth
    starts = np.round(np.arange(0.0, xs[-1] - MIN_RISING_INTERVALS + 1.0, 0.1), 1)
    if not len(starts):
        return None
    hinge = np.maximum(0.0, xs[None, :] - starts[:, None])  # one row per start
    centred = hinge - hinge.mean(axis=1, keepdims=True)
    spread = np.einsum("ij,ij->i", centred, centred)
    slopes = np.divide(centred @ (ys - ys.mean()), spread, out=np.zeros_like(spread), where=spread > 0)
    levels = ys.mean() - slopes * hinge.mean(axis=1)
    sse = np.sum((ys[None, :] - levels[:, None] - slopes[:, None] * hinge) ** 2, axis=1)
    usable = (spread > 0) & (slopes > 0) & (np.count_nonzero(hinge, axis=1) >= MIN_RISING_INTERVALS)
    if not usable.any():
        return None
    best = int(np.argmin(np.where(usable, sse, np.inf)))
    start, level, slope = float(starts[best]), float(levels[best]), float(slopes[best])
    residuals = ys - level - slope * np.maximum(0.0, xs - start)
    noise = 1.4826 * float(np.median(np.abs(residuals - np.median(residuals))))
    after = xs > start
    xa, ya = xs[after], ys[after]
    robust = _theil_sen(xa, ya)
    z = _mann_kendall(ya)
    if robust <= 0 or z < MIN_TREND_Z:
        return None
    earlier = ys[xs < start]
    before = float(np.median(earlier)) if len(earlier) >= 2 else level
    end = float(np.median(ya - robust * xa) + robust * xa[-1])
    rise = end - before
    if rise < max(min_fraction * abs(before), min_abs) or rise < NOISE_FACTOR * noise:
        return None
    if ys[-1] < before + FALL_BACK * rise:
        return None
    return Rise(start=start, before=before, end=end, slope=robust, z=z, intervals=len(ya), noise=noise)


def _theil_sen(xs: np.ndarray, ys: np.ndarray) -> float:
    i, j = np.triu_indices(len(xs), k=1)
    return float(np.median((ys[j] - ys[i]) / (xs[j] - xs[i])))


def _mann_kendall(ys: np.ndarray) -> float:
    n = len(ys)
    i, j = np.triu_indices(n, k=1)
    s = float(np.sum(np.sign(ys[j] - ys[i])))
    variance = n * (n - 1) * (2 * n + 5) / 18
    return (s - 1) / math.sqrt(variance) if s > 0 else 0.0


# -- per-interval percentiles from the binned histograms --------------------------------------------------
def _arrays(histogram: Mapping[Any, int]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.fromiter((int(k) for k in histogram), dtype=np.int64, count=len(histogram))
    counts = np.fromiter((int(c) for c in histogram.values()), dtype=np.int64, count=len(histogram))
    return keys, counts


def _percentiles(keys: np.ndarray, counts: np.ndarray) -> dict[str, float | None]:
    """p50/p95/p99 (ms) of one coarse histogram, interpolated by rank inside the bucket holding it."""
    total = int(counts.sum())
    found: dict[str, float | None] = {}
    if not total:
        return {name: None for name, _ in PERCENTILES}
    order = np.argsort(keys)
    keys, cumulative = keys[order], np.cumsum(counts[order])
    for name, q in PERCENTILES:
        if total * (1 - q) < MIN_TAIL_REQUESTS:
            found[name] = None
            continue
        rank = max(1, math.ceil(q * total - 1e-9))
        at = int(np.searchsorted(cumulative, rank))
        bucket, width = int(keys[at]), coarse_width(int(keys[at]))
        below = int(cumulative[at - 1]) if at else 0
        # interpolated inside the bucket by rank: a 3 %-wide bucket would hide an hour's creep of 2 %
        found[name] = (bucket + width * (rank - below - 0.5) / int(counts[order][at])) / 1000
    return found


def _interval_percentiles(bins: Mapping[str, Any], width: int) -> tuple[list[int], dict[str, list[dict]]]:
    """The intervals the stage ran at least half of, and per subject (all requests, each endpoint) their percentiles."""
    numbers = sorted(int(n) for n in bins)
    kept = [n for n in numbers if bins[str(n)]["last"] - bins[str(n)]["first"] + 1 >= MIN_COVERED * width]
    names = sorted({name for n in kept for name in bins[str(n)]["endpoints"]})
    table: dict[str, list[dict]] = {ALL_REQUESTS: [], **{name: [] for name in names}}
    for n in kept:
        endpoints = bins[str(n)]["endpoints"]
        merged_keys, merged_counts = [], []
        for name in names:
            entry = endpoints.get(name)
            if entry is None:
                table[name].append({key: None for key, _ in PERCENTILES})
                continue
            keys, counts = _arrays(entry["histogram"])
            merged_keys.append(keys)
            merged_counts.append(counts)
            table[name].append(_percentiles(keys, counts))
        if merged_keys:
            keys, inverse = np.unique(np.concatenate(merged_keys), return_inverse=True)
            counts = np.bincount(inverse, weights=np.concatenate(merged_counts)).astype(np.int64)
            table[ALL_REQUESTS].append(_percentiles(keys, counts))
        else:
            table[ALL_REQUESTS].append({key: None for key, _ in PERCENTILES})
    return kept, table


def _series_percentiles(series: Sequence[SeriesPoint], start: float, width: int, count: int) -> dict[str, list[dict]]:
    """No binned histograms (an older master): each interval's median of the per-second percentiles."""
    t = np.array([p.t for p in series], dtype=float)
    rows: list[dict] = []
    for name, _ in PERCENTILES:
        values = np.array([np.nan if getattr(p, name) is None else getattr(p, name) for p in series], dtype=float)
        number = ((t - int(start)) // width).astype(int)
        for n in range(count):
            inside = values[(number == n) & ~np.isnan(values)]
            if len(rows) <= n:
                rows.append({})
            rows[n][name] = float(np.median(inside)) if len(inside) >= MIN_COVERED * width else None
    return {ALL_REQUESTS: rows}


def _offset(rise: Rise, numbers: Sequence[int], width: int) -> int:
    """Seconds from the stage's start to the interval boundary nearest the fitted start."""
    position = min(len(numbers) - 1, int(round(rise.start)))
    return int(numbers[position] * width) if numbers else int(round(rise.start) * width)


def _fitted(rise: Rise, width: int) -> str:
    return f"the fit puts its start at {fmt.duration(round(rise.start * width / 60) * 60)} into the stage"


# -- the three kinds -----------------------------------------------------------------------------------
def _where(start_s: float, width: int) -> str:
    if width >= DRIFT_HOUR_S:
        return f"hour {int(start_s // DRIFT_HOUR_S)}"
    return f"{fmt.duration(start_s)} in"


def _latency(stage: str, stage_start: float, width: int, numbers: list[int],
             table: Mapping[str, list[dict]], source: str) -> list[DriftFinding]:
    found = []
    min_fraction, min_abs = LATENCY_MIN_RISE
    for subject, rows in table.items():
        rises = []
        for name, _ in PERCENTILES:
            values = [row.get(name) for row in rows]
            rise = rise_of(values, min_fraction=min_fraction, min_abs=min_abs)
            if rise is not None:
                rises.append((rise.rise / rise.before if rise.before else math.inf, name, rise, values))
        if not rises:
            continue
        # named after the clearest of its percentiles (the rise against its own noise): p99 of a small
        # endpoint is the noisiest, and its start the least certain
        rises.sort(key=lambda r: -r[2].rise / max(r[2].noise, 1e-9))
        change, name, rise, values = rises[0]
        offset = _offset(rise, numbers, width)
        label = name.removesuffix("_ms")
        unit = "h" if width >= DRIFT_HOUR_S else "interval"
        per = rise.slope * (DRIFT_HOUR_S / width)
        evidence = [
            f"{label} per {'hour' if width >= DRIFT_HOUR_S else fmt.duration(width)}: "
            + ", ".join("–" if v is None else f"{v:.1f}" for v in values) + " ms",
            f"{fmt.ms(rise.before)} before {_where(offset, width)}, {fmt.ms(rise.end)} at the stage's end "
            f"(+{change * 100:.0f} %); Theil-Sen slope +{per:.2f} ms/h over {rise.intervals} {unit}s, "
            f"Mann-Kendall z = {rise.z:.1f}, noise ±{rise.noise:.2f} ms; {_fitted(rise, width)}",
        ]
        others = [f"{n.removesuffix('_ms')} +{c * 100:.0f} %" for c, n, _, _ in rises[1:]]
        if others:
            evidence.append("also rising: " + ", ".join(others))
        evidence.append(f"from {source}")
        found.append(DriftFinding(
            kind="latency", stage=stage, subject=subject, metric=name, started_at=stage_start + offset,
            start_offset_s=float(offset), start_hour=int(offset // DRIFT_HOUR_S),
            title=(f"{label} of {subject} rose {change * 100:.0f} % ({fmt.ms(rise.before)} → {fmt.ms(rise.end)}) "
                   f"from {_where(offset, width)} of {stage}"),
            evidence=evidence, before=round(rise.before, 3), after=round(rise.end, 3),
            change_pct=round(change * 100, 1), slope_per_hour=round(per, 4),
            values=[None if v is None else round(v, 3) for v in values],
        ))
    return found


def _bursts(stage: str, stage_start: float, stage_end: float, width: int,
            series: Sequence[SeriesPoint]) -> list[DriftFinding]:
    rows = [p for p in series if p.stage == stage and stage_start - 1 <= p.t <= stage_end + 1]
    window = max(10, min(300, width // 60))
    if len(rows) < 2 * window:
        return []
    rows.sort(key=lambda p: p.t)
    count = len(rows) // window
    requests = np.array([p.requests for p in rows[: count * window]], dtype=float).reshape(count, window).sum(axis=1)
    failures = np.array([p.failures for p in rows[: count * window]], dtype=float).reshape(count, window).sum(axis=1)
    starts = np.array([rows[i * window].t for i in range(count)], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rates = np.where(requests > 0, failures / np.maximum(requests, 1), 0.0)
    typical = rates <= np.quantile(rates, 0.9)  # the stage's own rate, without the bursts it is looking for
    baseline = max(BASELINE_FLOOR, float(failures[typical].sum() / max(1.0, requests[typical].sum())))
    expected = np.maximum(requests * baseline, 1e-9)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_tail = -(failures * np.log(np.where(failures > 0, failures / expected, 1.0)) - failures + expected)
    flagged = ((failures >= BURST_MIN_FAILURES) & (rates >= max(BURST_FACTOR * baseline, baseline + BURST_MIN_EXCESS))
               & (log_tail <= BURST_LOG_P))
    bursts: list[tuple[int, int]] = []
    for i in np.flatnonzero(flagged):
        if bursts and i - bursts[-1][1] <= 2:  # one quiet window inside a burst does not end it
            bursts[-1] = (bursts[-1][0], int(i))
        else:
            bursts.append((int(i), int(i)))
    found = []
    for first, last in sorted(bursts, key=lambda b: -failures[b[0]: b[1] + 1].sum())[:MAX_BURSTS]:
        failed, sent = float(failures[first: last + 1].sum()), float(requests[first: last + 1].sum())
        began, ended = float(starts[first]), float(starts[last] + window)
        offset = began - stage_start
        rate = failed / sent if sent else 0.0
        found.append(DriftFinding(
            kind="errors", stage=stage, subject=ALL_REQUESTS, metric="error_rate", started_at=began,
            start_offset_s=round(offset, 1), start_hour=int(offset // DRIFT_HOUR_S),
            title=(f"error burst: {fmt.pct(rate)} of requests failed for {fmt.duration(ended - began)} "
                   f"from {_where(offset, width)} of {stage} (the stage's own rate: {fmt.pct(baseline)})"),
            evidence=[f"{fmt.count(int(failed))} of {fmt.count(int(sent))} requests failed between "
                      f"{fmt.duration(offset)} and {fmt.duration(ended - stage_start)} into the stage, "
                      f"{rate / baseline:.0f}× the stage's rate of {fmt.pct(baseline)} (in {window} s windows)"],
            before=round(baseline, 6), after=round(rate, 6), change_pct=round((rate / baseline - 1) * 100, 1),
            ended_at=ended,
        ))
    return sorted(found, key=lambda f: f.started_at)


def _medians(points: np.ndarray, start: float, end: float, width: int) -> list[float | None]:
    """The median of each ``width``-second bin of ``points`` (time, value) from ``start``; None with too few."""
    number = ((points[:, 0] - start) // width).astype(int)
    values: list[float | None] = []
    for n in range(int((end - start) // width)):
        v = points[number == n, 1]
        values.append(float(np.median(v)) if len(v) >= MIN_POINTS_PER_INTERVAL else None)
    return values


def _server(stage: str, stage_start: float, stage_end: float, width: int,
            document: Mapping[str, Any] | None) -> list[DriftFinding]:
    found = []
    for name, entry in sorted(((document or {}).get("series") or {}).items()):
        role = entry.get("role")
        if role not in SERVER_ROLES or not entry.get("points"):
            continue
        points = np.asarray(entry["points"], dtype=float)
        inside = points[(points[:, 0] >= stage_start) & (points[:, 0] <= stage_end)]
        if not len(inside):
            continue
        # The target is sampled every few seconds, so its trend is fitted on bins finer than the
        # latency intervals: a creep of the last hours of a day has a few dozen points, not a few
        # (Mann-Kendall cannot reach its z on eight hourly medians that a daily swing bends).
        bin_s = max(1, width // SERVER_BINS_PER_INTERVAL)
        values = _medians(inside, stage_start, stage_end, bin_s)
        hourly = _medians(inside, stage_start, stage_end, width)
        min_fraction, min_abs = SERVER_MIN_RISE[role]
        if role == "memory" and not str(entry.get("unit") or "").startswith("MiB"):
            min_abs = 1.0  # a share (%), not MiB
        rise = rise_of(values, min_fraction=min_fraction, min_abs=min_abs)
        if rise is None:
            continue
        unit = entry.get("unit") or ""
        offset = _offset(rise, list(range(len(values))), bin_s)
        change = rise.rise / rise.before if rise.before else math.inf
        per = rise.slope * (DRIFT_HOUR_S / bin_s)
        peak = max(v for v in values if v is not None)
        values = hourly  # what the evidence shows: one median per interval
        found.append(DriftFinding(
            kind="server", stage=stage, subject=name, metric=unit, started_at=stage_start + offset,
            start_offset_s=float(offset), start_hour=int(offset // DRIFT_HOUR_S),
            title=(f"the target's {name} grew {change * 100:.0f} % ({fmt.num(rise.before, 1)} → {fmt.num(rise.end, 1)} "
                   f"{unit}) from {_where(offset, width)} of {stage} and did not fall back"),
            evidence=[
                f"{name} per {'hour' if width >= DRIFT_HOUR_S else fmt.duration(width)} (median): "
                + ", ".join("–" if v is None else fmt.num(v, 1) for v in values) + f" {unit}",
                f"Theil-Sen slope +{fmt.num(per, 2)} {unit}/h over {rise.intervals} bins of {fmt.duration(bin_s)}, "
                f"Mann-Kendall z = "
                f"{rise.z:.1f}; the last interval {fmt.num(values[-1] or 0, 1)} {unit}, the peak {fmt.num(peak, 1)} {unit}"
                + (f" of a limit of {fmt.num(entry['limit'], 0)}" if entry.get("limit") else "") + f"; {_fitted(rise, bin_s)}",
            ],
            before=round(rise.before, 3), after=round(rise.end, 3), change_pct=round(change * 100, 1),
            slope_per_hour=round(per, 4), values=[None if v is None else round(v, 3) for v in values],
        ))
    return found


# -- the entry point -------------------------------------------------------------------------------------
def find_drift(stages: Sequence[StageResult], timeline: Sequence[Mapping[str, Any]], *,
               intervals: Mapping[str, Any] | None, series: Sequence[SeriesPoint],
               server_document: Mapping[str, Any] | None) -> Drift:
    """Drift over every long stage the run judged.

    :param stages: the run's stage results (which were judged, and on what).
    :param timeline: the master's stages (``start``, ``end`` in epoch seconds), index for index.
    :param intervals: the master's ``intervals`` (per stage, per interval, per endpoint histograms), or None.
    :param series: the run's 1-second series (error bursts; latency when there are no intervals).
    :param server_document: ``server_metrics.json``, or None.
    """
    drift = Drift()
    notes: list[str] = []
    for index, (stage, timing) in enumerate(zip(stages, timeline)):
        start, end = timing.get("start"), timing.get("end")
        if start is None or end is None or stage.judged_on not in ("steady", "whole"):
            continue
        width = drift_interval_s(float(end) - float(start))
        if not width:
            continue
        drift.stages.append(stage.name)
        drift.interval_s = max(drift.interval_s, width)
        binned = (intervals or {}).get(str(index))
        if binned and binned.get("bins"):
            numbers, table = _interval_percentiles(binned["bins"], int(binned.get("interval_s") or width))
            width = int(binned.get("interval_s") or width)
            stage_start = float(binned.get("start") or start)
            source = "the merged histograms of each interval"
        else:
            count = int((float(end) - float(start)) // width)
            numbers, table = list(range(count)), _series_percentiles(series, float(start), width, count)
            stage_start = float(start)
            source = "the median of each interval's 1-second percentiles (the master binned no histograms)"
        latency = _latency(stage.name, stage_start, width, numbers, table, source)
        overall = [f for f in latency if f.subject == ALL_REQUESTS]
        endpoints = sorted((f for f in latency if f.subject != ALL_REQUESTS), key=lambda f: -(f.change_pct or 0))
        if len(endpoints) > MAX_ENDPOINT_FINDINGS:
            notes.append(f"{stage.name}: {len(endpoints) - MAX_ENDPOINT_FINDINGS} more endpoints rose as well")
        drift.findings += overall + endpoints[:MAX_ENDPOINT_FINDINGS]
        drift.findings += _bursts(stage.name, float(start), float(end), width, series)
        drift.findings += _server(stage.name, stage_start, float(end), width, server_document)
    if not drift.stages:
        notes.append(f"no judged stage was long enough ({fmt.duration(20 * 60)} at least) to show drift")
    drift.note = "; ".join(notes)
    return drift
