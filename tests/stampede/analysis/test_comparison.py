"""The regression verdict (tolerance, effect size, sample sizes), per stage and endpoint; the trend; judged histograms."""

from __future__ import annotations

import random

import pytest

from stampede.analysis.comparison import Tolerance, compare, compare_pair, judged_histograms, prob_slower, trend
from stampede.core.histogram import LatencyHistogram
from stampede.core.records import RunResult, StageResult


def hist(values_ms, failures: int = 0) -> dict:
    h = LatencyHistogram()
    for v in values_ms:
        h.record_ms(v)
    return {"histogram": {str(k): c for k, c in h.to_dict().items()}, "failures": failures}


def noisy(center: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [max(0.5, rng.gauss(center, center * 0.2)) for _ in range(n)]


def result(run_id: str, *stage_names: str) -> RunResult:
    stages = [StageResult(name=name, scenario="nightly", users=100, duration_s=60, requests=100, failures=0, rps=50.0,
                          p50_ms=8.0, p95_ms=20.0, p99_ms=30.0, max_ms=40.0, error_rate=0.0)
              for name in stage_names or ("normal",)]
    return RunResult(run_id=run_id, scenario="nightly", target="http://127.0.0.1:8001/v1", verdict="pass",
                     started_at="2026-01-02", finished_at="2026-01-02", stages=stages)


def history_row(run_id: str, histograms: dict) -> dict:
    """A baseline as :meth:`RunStore.get` returns it."""
    return {"run_id": run_id, "started_at": "2026-01-01T00:00:00+00:00", "verdict": "pass", "histograms": histograms,
            "stages": [{"name": "normal", "users": 90, "rps": 45.0, "p95_ms": 12.0, "error_rate": 0.0}]}


@pytest.mark.parametrize(
    ("old", "new", "verdict"),
    [
        pytest.param(noisy(10, 200, 1), noisy(10, 200, 2), "unchanged", id="same-distribution"),
        pytest.param(noisy(10, 200, 1), noisy(70, 200, 2), "regressed", id="plus-60ms"),
        pytest.param(noisy(100, 200, 1), noisy(112, 200, 2), "unchanged", id="within-tolerance"),
        pytest.param(noisy(10, 200, 1), noisy(16, 200, 2), "unchanged", id="under-the-ms-floor"),
        pytest.param(noisy(10, 12, 1), noisy(70, 12, 2), "insufficient data", id="too-few-requests"),
        pytest.param(noisy(70, 200, 1), noisy(10, 200, 2), "improved", id="faster"),
        pytest.param(noisy(10, 200, 1) + [900] * 12, noisy(10, 200, 2), "unchanged", id="baseline-outliers"),
    ],
)
def test_regression_verdict_uses_tolerance_floor_and_sample_sizes(old, new, verdict):
    assert compare_pair(hist(new), hist(old), Tolerance()).verdict == verdict


def test_a_tail_only_blip_is_not_a_regression_but_more_errors_are():
    base = noisy(10, 300, 1)
    tail = noisy(10, 285, 2) + [80] * 15  # p95 jumps, but the distribution hardly moves
    assert compare_pair(hist(tail), hist(base), Tolerance()).verdict == "unchanged"
    errors = compare_pair(hist(base, failures=30), hist(base, failures=0), Tolerance())
    assert errors.verdict == "regressed" and "errors 0.00% → 10.00%" in errors.why


def test_a_verdict_carries_its_evidence():
    pair = compare_pair(hist(noisy(70, 200, 2)), hist(noisy(10, 200, 1)), Tolerance(), name="GET /a")
    assert pair.name == "GET /a" and pair.requests == pair.baseline_requests == 200
    assert pair.change_ms == pytest.approx(pair.p95_ms - pair.baseline_p95_ms, abs=1e-3)
    assert pair.prob_slower > 0.99 and pair.shift_z > 10 and pair.allowed_ms == 10.0
    low, high = pair.p95_ci
    assert low <= pair.p95_ms <= high


def test_prob_slower_is_exact_on_histograms():
    assert prob_slower(LatencyHistogram({1000: 1}), LatencyHistogram({500: 1})) == 1.0
    assert prob_slower(LatencyHistogram({1000: 2}), LatencyHistogram({1000: 2})) == 0.5


def test_compare_names_the_regressed_endpoint_per_stage():
    old = {"normal": {"GET /a": hist(noisy(10, 100, 1)), "GET /b": hist(noisy(12, 100, 3)),
                      "GET /old": hist([5] * 40)}}
    new = {"normal": {"GET /a": hist(noisy(10, 100, 2)), "GET /b": hist(noisy(80, 100, 4))},
           "extra": {"GET /a": hist([5] * 40)}}

    out = compare(result("r2", "normal", "extra"), new, history_row("r1", old), why="test")

    assert out.verdict == "regressed" and out.baseline_run_id == "r1" and out.why == "test"
    assert [(r.stage, r.endpoint) for r in out.regressions] == [("normal", "GET /b")]
    normal, extra = out.stages
    assert (normal.users, normal.baseline_users, normal.baseline_rps) == (100, 90, 45.0)
    assert {e.name: e.verdict for e in normal.endpoints} == {"GET /a": "unchanged", "GET /b": "regressed",
                                                             "GET /old": "gone"}
    assert extra.verdict == "not in baseline"
    assert out.tolerance["min_prob_slower"] == Tolerance().min_prob_slower


def test_without_a_baseline_the_comparison_says_why():
    out = compare(result("r2"), {}, None, why="no earlier passing run")
    assert (out.verdict, out.why, out.stages) == ("no baseline", "no earlier passing run", [])


def test_trend_is_one_point_per_history_row():
    rows = [history_row("r1", {}), {**history_row("r2", {}), "verdict": "fail"}]
    points = trend(rows)
    assert [(p.run_id, p.verdict) for p in points] == [("r1", "pass"), ("r2", "fail")]
    assert points[0].stages["normal"].rps == 45.0 and points[0].stages["normal"].p99_ms is None


def test_judged_histograms_are_the_steady_part_or_else_the_whole_stage():
    steady = hist([10] * 40, failures=1)
    ramp = hist([50] * 10)
    output = {"stages": [{"name": "hold"}, {"name": "spike"}],
              "phases": {"0/ramp": {"GET /a": ramp}, "0/steady": {"GET /a": steady},
                         "1/ramp": {"GET /a": ramp}, "1/steady": {}}}

    judged = judged_histograms(output)

    assert judged["hold"]["GET /a"] == steady
    assert judged["spike"]["GET /a"] == ramp
