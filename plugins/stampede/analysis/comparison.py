"""The run against its baseline, and the trend: is this run slower than the one it is compared with?

The baseline is chosen by :meth:`stampede.state.history.RunStore.baseline_for`;
this module only compares. The regression verdict, per stage and per endpoint
(:func:`compare`):

- both samples need ``min_requests`` requests, otherwise "insufficient data";
- "regressed" when the p95 grew by more than ``max(tolerance x old p95, floor_ms)``
  *and* the whole distribution moved: the probability that a request of the new
  run is slower than one of the baseline (computed exactly from the two
  histograms; 0.5 means no difference) is at least ``min_prob_slower`` and
  significant by the Mann-Whitney rank test (one-sided, 1 %); "improved" the
  other way round. Distribution-free 95 % confidence intervals of both p95s
  (order statistics) are reported as evidence;
- or when the error rate grew by more than ``error_rate_abs``, significantly
  (two-proportion z-test).

The histograms are the ones the history stores: per stage, per endpoint
``{histogram, failures}`` of the part the stage was judged on (:func:`judged_histograms`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from stampede.core.histogram import LatencyHistogram
from stampede.core.records import (
    Comparison,
    PairComparison,
    Regression,
    RunResult,
    StageComparison,
    TrendPoint,
    TrendStage,
)

__all__ = ["Tolerance", "compare", "compare_pair", "judged_histograms", "prob_slower", "quantile_ci", "trend"]

Z_95 = 1.959964
Z_ONE_SIDED_99 = 2.326348


@dataclass(frozen=True)
class Tolerance:
    """How much worse counts as a regression, and how many requests a verdict needs."""

    relative: float = 0.25  # p95 may grow by 25 % ...
    floor_ms: float = 10.0  # ... or 10 ms, whichever is larger
    min_requests: int = 30
    error_rate_abs: float = 0.01  # error rate may grow by one percentage point
    min_prob_slower: float = 0.65  # effect size: a new request slower than a baseline one at least this often

    @classmethod
    def from_env(cls) -> Tolerance:
        def get(name: str, default: float) -> float:
            return float(os.environ.get(name, default))

        return cls(
            relative=get("STAMPEDE_REGRESSION_TOLERANCE", cls.relative),
            floor_ms=get("STAMPEDE_REGRESSION_FLOOR_MS", cls.floor_ms),
            min_requests=int(get("STAMPEDE_REGRESSION_MIN_REQUESTS", cls.min_requests)),
            error_rate_abs=get("STAMPEDE_REGRESSION_ERROR_RATE", cls.error_rate_abs),
        )


def judged_histograms(output: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per stage, per endpoint: the histogram and failures of the part the stage was judged on.

    The same choice as ``figures.stages.stage_results``: the steady part when it has requests, else the whole stage.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    phases = output.get("phases") or {}
    for index, stage in enumerate(output.get("stages") or []):
        steady = phases.get(f"{index}/steady") or {}
        parts = [steady] if any(sum(e["histogram"].values()) for e in steady.values()) else [
            phases.get(f"{index}/ramp") or {}, steady]
        merged: dict[str, dict[str, Any]] = {}
        for part in parts:
            for name, entry in part.items():
                slot = merged.setdefault(name, {"histogram": LatencyHistogram(), "failures": 0})
                slot["histogram"].merge(entry["histogram"])  # string keys (JSON) are converted by merge
                slot["failures"] += int(entry.get("failures", 0))
        out[stage["name"]] = {n: {"histogram": {str(k): v for k, v in s["histogram"].to_dict().items()},
                                  "failures": s["failures"]} for n, s in merged.items()}
    return out


# -- statistics ----------------------------------------------------------------------------------
def _hist(entry: Mapping[str, Any] | None) -> LatencyHistogram:
    return LatencyHistogram((entry or {}).get("histogram") or {})  # string keys (JSON) are converted by merge


def _value_at_rank(histogram: LatencyHistogram, rank: int) -> float | None:
    """The ``rank``-th smallest value (1-based) in ms, as ``percentile_ms`` reports a bucket."""
    if histogram.total == 0:
        return None
    rank = min(max(rank, 1), histogram.total)
    seen = 0
    for bucket in sorted(histogram.counts):
        seen += histogram.counts[bucket]
        if seen >= rank:
            return LatencyHistogram({bucket: 1}).percentile_ms(0.5)
    return histogram.max_ms()


def quantile_ci(histogram: LatencyHistogram, q: float = 0.95, z: float = Z_95) -> tuple[float | None, float | None]:
    """Distribution-free confidence interval of the ``q`` quantile (order statistics, normal approximation)."""
    n = histogram.total
    if n == 0:
        return None, None
    half = z * math.sqrt(n * q * (1 - q))
    low, high = math.floor(n * q - half), math.ceil(n * q + half) + 1
    return _value_at_rank(histogram, low), _value_at_rank(histogram, high)


def prob_slower(new: LatencyHistogram, old: LatencyHistogram) -> float | None:
    """P(a request of ``new`` is slower than one of ``old``), ties counting half (0.5: no difference)."""
    if not new.total or not old.total:
        return None
    old_sorted = sorted(old.counts.items())
    below, wins, index = 0, 0.0, 0
    for bucket, count in sorted(new.counts.items()):
        while index < len(old_sorted) and old_sorted[index][0] < bucket:
            below += old_sorted[index][1]
            index += 1
        ties = old_sorted[index][1] if index < len(old_sorted) and old_sorted[index][0] == bucket else 0
        wins += count * (below + ties / 2)
    return round(wins / (new.total * old.total), 4)


def _rank_z(prob: float, n_new: int, n_old: int) -> float:
    """Mann-Whitney rank-sum z from P(slower): how sure the new distribution sits above the old one."""
    sd = math.sqrt(n_new * n_old * (n_new + n_old + 1) / 12)
    return 0.0 if sd == 0 else (prob - 0.5) * n_new * n_old / sd


def _error_z(f_new: int, n_new: int, f_old: int, n_old: int) -> float:
    pooled = (f_new + f_old) / (n_new + n_old)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_new + 1 / n_old))
    return 0.0 if se == 0 else (f_new / n_new - f_old / n_old) / se


# -- the verdict ---------------------------------------------------------------------------------
def compare_pair(new: Mapping[str, Any] | None, old: Mapping[str, Any] | None, tol: Tolerance, *,
                 name: str = "") -> PairComparison:
    """One endpoint (or a whole stage) of the run against the same in the baseline.

    :param new: ``{histogram, failures}`` of this run; ``old`` the same of the baseline.
    """
    hn, ho = _hist(new), _hist(old)
    fn, fo = int((new or {}).get("failures", 0)), int((old or {}).get("failures", 0))
    pair = PairComparison(
        name=name, requests=hn.total, baseline_requests=ho.total,
        p95_ms=hn.percentile_ms(0.95), baseline_p95_ms=ho.percentile_ms(0.95),
        p50_ms=hn.percentile_ms(0.5), baseline_p50_ms=ho.percentile_ms(0.5),
        error_rate=round(fn / hn.total, 6) if hn.total else None,
        baseline_error_rate=round(fo / ho.total, 6) if ho.total else None,
    )
    if min(hn.total, ho.total) < tol.min_requests:
        pair.verdict = "insufficient data"
        pair.why = f"{min(hn.total, ho.total)} requests < {tol.min_requests} needed for a verdict"
        return pair
    p_new, p_old = pair.p95_ms, pair.baseline_p95_ms
    ci_new, ci_old = quantile_ci(hn), quantile_ci(ho)
    allowed = max(tol.relative * p_old, tol.floor_ms)
    slower = prob_slower(hn, ho)
    z = _error_z(fn, hn.total, fo, ho.total)
    shift_z = _rank_z(slower, hn.total, ho.total)
    pair.change_ms = round(p_new - p_old, 3)
    pair.change_pct = round((p_new - p_old) / p_old, 4) if p_old else None
    pair.allowed_ms = round(allowed, 3)
    pair.p95_ci, pair.baseline_p95_ci = list(ci_new), list(ci_old)
    pair.prob_slower, pair.error_z, pair.shift_z = slower, round(z, 2), round(shift_z, 2)
    reasons = []
    if p_new - p_old > allowed and shift_z > Z_ONE_SIDED_99 and slower >= tol.min_prob_slower:
        reasons.append(
            f"p95 {p_old:.1f} → {p_new:.1f} ms (+{p_new - p_old:.1f} ms, allowed {allowed:.1f}); a request is slower "
            f"than a baseline one with probability {slower:.2f} (rank test z {shift_z:.1f}, "
            f"{ho.total} vs {hn.total} requests); p95 95 % CIs [{ci_old[0]:.1f}, {ci_old[1]:.1f}] → "
            f"[{ci_new[0]:.1f}, {ci_new[1]:.1f}] ms")
    if fn / hn.total - fo / ho.total > tol.error_rate_abs and z > Z_95:
        reasons.append(f"errors {fo / ho.total:.2%} → {fn / hn.total:.2%} (z {z:.1f})")
    if reasons:
        pair.verdict, pair.why = "regressed", "; ".join(reasons)
    elif p_old - p_new > allowed and shift_z < -Z_ONE_SIDED_99 and slower <= 1 - tol.min_prob_slower:
        pair.verdict, pair.why = "improved", f"p95 {p_old:.1f} → {p_new:.1f} ms ({p_new - p_old:.1f} ms), significant"
    else:
        pair.verdict = "unchanged"
        pair.why = f"p95 {p_old:.1f} → {p_new:.1f} ms: within ±{allowed:.1f} ms or not significant"
    return pair


def _stage_total(endpoints: Mapping[str, Any]) -> dict[str, Any]:
    merged = LatencyHistogram.merged(_hist(e) for e in endpoints.values())
    return {"histogram": merged.to_dict(), "failures": sum(int(e.get("failures", 0)) for e in endpoints.values())}


def compare(
    result: RunResult, histograms: Mapping[str, Any], baseline: Mapping[str, Any] | None, *,
    why: str = "", tolerance: Tolerance | None = None,
) -> Comparison:
    """results.json ``comparison``: per stage and per endpoint, with an overall verdict.

    :param histograms: this run's :func:`judged_histograms`.
    :param baseline: the baseline's history row (``run_id``, ``stages``, ``histograms``...), or None.
    :param why: why that baseline was chosen (or why there is none).
    """
    tol = tolerance or Tolerance.from_env()
    if baseline is None:
        return Comparison(verdict="no baseline", why=why)
    base_hist = baseline.get("histograms") or {}
    base_stages = {s["name"]: s for s in baseline.get("stages") or []}
    stages: list[StageComparison] = []
    regressions: list[Regression] = []
    improvements: list[Regression] = []
    for stage in result.stages:
        name = stage.name
        if name not in base_hist or name not in histograms:
            stages.append(StageComparison(name=name, verdict="not in baseline"))
            continue
        new_eps, old_eps = histograms[name], base_hist[name]
        endpoints: list[PairComparison] = []
        for endpoint in sorted(set(new_eps) | set(old_eps)):
            if endpoint not in new_eps or endpoint not in old_eps:
                endpoints.append(PairComparison(name=endpoint, verdict="new" if endpoint in new_eps else "gone"))
                continue
            pair = compare_pair(new_eps[endpoint], old_eps[endpoint], tol, name=endpoint)
            endpoints.append(pair)
            if pair.verdict == "regressed":
                regressions.append(Regression(stage=name, endpoint=endpoint, why=pair.why))
            elif pair.verdict == "improved":
                improvements.append(Regression(stage=name, endpoint=endpoint, why=pair.why))
        total = compare_pair(_stage_total(new_eps), _stage_total(old_eps), tol, name=name)
        old_stage = base_stages.get(name, {})
        stages.append(StageComparison(
            **asdict(total), users=stage.users, baseline_users=old_stage.get("users"),
            rps=stage.rps, baseline_rps=old_stage.get("rps"), endpoints=endpoints,
        ))
    if regressions or any(s.verdict == "regressed" for s in stages):
        verdict = "regressed"
    else:
        verdict = "improved" if improvements else "unchanged"
    return Comparison(
        verdict=verdict, why=why, baseline_run_id=baseline["run_id"], baseline_started_at=baseline.get("started_at"),
        baseline_verdict=baseline.get("verdict"), tolerance=asdict(tol), regressions=regressions,
        improvements=improvements, stages=stages,
    )


def trend(history: Sequence[Mapping[str, Any]]) -> list[TrendPoint]:
    """results.json ``trend``: per run (oldest first) its verdict and per-stage p95, req/s and errors.

    :param history: history rows (:meth:`stampede.state.history.RunStore.recent`).
    """
    return [TrendPoint(
        run_id=run["run_id"], started_at=run["started_at"], verdict=run["verdict"],
        stages={s["name"]: TrendStage(users=s.get("users"), p95_ms=s.get("p95_ms"), p99_ms=s.get("p99_ms"),
                                      rps=s.get("rps"), error_rate=s.get("error_rate")) for s in run["stages"]},
    ) for run in history]
