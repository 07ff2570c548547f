"""After the run: every threshold measured on the stage's steady part, per endpoint and server series, judged by GX.

The master's output here is built from real histograms the way the aggregator writes it; the
figures measure the thresholds and Great Expectations judges them, as the validate step does.
"""

from __future__ import annotations

import pytest

from stampede.analysis.expectations import apply_outcome, validate_stages
from stampede.core.histogram import LatencyHistogram
from stampede.figures.stages import stage_results
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import parse_scenario
from stampede.steps.validate import mark_judged_parts, observations_of

START, STEADY, END = 1000.0, 1005, 1065.0


def endpoint(ms: float, count: int, failures: int = 0) -> dict:
    histogram = LatencyHistogram()
    for _ in range(count):
        histogram.record_ms(ms)
    return {"histogram": histogram.to_dict(), "failures": failures, "errors": {}}


OUTPUT = {
    "started_at": START, "finished_at": END,
    "stages": [{"name": "hold", "start": START, "end": END, "steady_from": STEADY}],
    "phases": {
        "0/ramp": {"GET /listings": endpoint(900.0, 50)},  # the ramp's burst is never judged
        "0/steady": {"GET /listings": endpoint(120.0, 600), "GET /escrows": endpoint(8.0, 1200),
                     "GET /escrows/{id}": endpoint(9.0, 600), "POST /escrows": endpoint(12.0, 300, failures=3)},
    },
    "phase_seconds": {"0/ramp": 5.0, "0/steady": 60.0},
    "iterations": {},
    "windows": {"0": {"5": {"seconds": {"whole": 65, "steady": 60},
                            "whole": {"": {"value": 150.0, "at": 1040, "windows": 61}},
                            "steady": {"": {"value": 130.0, "at": 1040, "windows": 56}}}}},
}
DOCUMENT = {"source": "prometheus", "series": {
    "db_pool_waiting": {"role": "pool_waiting", "points": [[1001.0, 9.0], [1010.0, 0.0], [1020.0, 2.0], [1030.0, 0.0]]},
    "cpu_pct": {"role": "cpu", "points": [[1010.0, 40.0], [1020.0, 60.0]]},
}}
RULES = [
    {"stat": "p95", "below": 50, "endpoint": "GET /listings"},                           # 0 fails: the slow route
    {"stat": "p99", "below": 50, "pattern": "GET /escrows.*", "each": True},            # 1 passes, twice
    {"stat": "error_rate", "below": 0.02, "endpoints": ["POST /escrows", "GET /escrows/{id}"], "name": "escrow calls"},
    {"stat": "p95", "below": 50, "endpoint": "GET /typo"},                               # 3 not judged: fails
    {"stat": "p95", "below": 50, "endpoint": "DELETE /never", "optional": True},         # 4 not judged: optional
    {"stat": "p95", "below": 200, "window_s": 5},                                        # 5 the worst window
    {"server": "db_pool_waiting", "below": 1},                                           # 6 fails on the steady part
    {"server": "cpu_pct", "stat": "mean", "below": 80},                                  # 7 passes
    {"server": "memory_mib", "below": 4000},                                             # 8 not sampled: fails
    {"stat": "requests", "below": 1000000, "endpoint": "GET /typo"},                     # 9 a count of nothing is no pass
]


def judge(rules: list[dict], document: dict | None = DOCUMENT):
    scenario = parse_scenario({"name": "slo", "journeys": {"agent": 1}, "thresholds": rules,
                               "stages": [{"name": "hold", "users": 10, "spawn_rate": 2, "duration_s": 65}]})
    plan = RunPlan(run_id="v", target="http://127.0.0.1:1/v1", environment="local", scenarios=(scenario,), workers=0)
    stages = stage_results(OUTPUT, [s.__dict__ for s in plan.stages])
    judged = mark_judged_parts(stages, OUTPUT, plan)
    outcome = validate_stages(judged, observations_of(stages, judged, OUTPUT, plan.stages, document))
    apply_outcome(judged, outcome)
    return stages[0], outcome


def test_exactly_the_slow_routes_threshold_and_what_could_not_be_judged_fail():
    stage, outcome = judge(RULES)
    outcomes = {check.name: (check.outcome, check.fails) for check in stage.checks}
    assert outcomes == {
        "requests > 0": ("pass", False),
        "GET /listings p95 < 50 ms": ("fail", True),
        "GET /escrows p99 < 50 ms": ("pass", False),
        "GET /escrows/{id} p99 < 50 ms": ("pass", False),
        "escrow calls": ("pass", False),
        "GET /typo p95 < 50 ms": ("not judged", True),
        "DELETE /never p95 < 50 ms": ("not judged", False),
        "p95 < 200 ms over 5 s windows": ("pass", False),
        "server db_pool_waiting max < 1": ("fail", True),
        "server cpu_pct mean < 80": ("pass", False),
        "server memory_mib max < 4000": ("not judged", True),
        "GET /typo requests < 1000000": ("not judged", True),
    }
    assert not stage.passed and outcome.success is False
    checks = {c.name: c for c in stage.checks}
    listings = checks["GET /listings p95 < 50 ms"]
    assert listings.endpoint == "GET /listings" and listings.value == pytest.approx(120.0, rel=1e-3)  # steady only
    assert checks["escrow calls"].value == round(3 / 900, 6) and checks["escrow calls"].endpoint == "escrow calls"
    typo = checks["GET /typo p95 < 50 ms"]
    assert typo.value is None and not typo.passed and "no requests to GET /typo in the steady part" in typo.reason
    assert "GET /listings" in typo.reason  # says which endpoints did have requests
    assert checks["DELETE /never p95 < 50 ms"].optional
    window = checks["p95 < 200 ms over 5 s windows"]
    assert (window.value, window.window_s, window.at) == (130.0, 5, 1040)  # the steady part's worst window
    # the pool waited 9 in the ramp (not judged) and 2 in the steady part
    assert checks["server db_pool_waiting max < 1"].value == 2.0 and checks["server db_pool_waiting max < 1"].source == "server"
    assert "not sampled (sampled: cpu_pct, db_pool_waiting)" in checks["server memory_mib max < 4000"].reason


def test_great_expectations_judges_a_row_per_stage_and_subject():
    _, outcome = judge(RULES)
    results = outcome.gx_result["results"]
    assert len(results) == 12 - 1  # every check but the optional one GX has nothing to judge for
    subjects = {r["expectation_config"]["meta"]["subject"] for r in results}
    assert {"GET /listings", "GET /escrows", "GET /escrows/{id}", "escrow calls", "GET /typo", "db_pool_waiting"} <= subjects
    typo = next(r for r in results if r["expectation_config"]["meta"]["subject"] == "GET /typo"
                and r["expectation_config"]["meta"]["metric"] == "p95_ms")
    assert typo["success"] is False and typo["result"]["observed_value"] is None  # GX fails the empty cell itself


def test_without_server_metrics_a_server_threshold_is_not_judged_never_passed():
    stage, _ = judge([{"server": "db_pool_waiting", "below": 1}], document=None)
    check = stage.checks[-1]
    assert (check.judged, check.passed, check.fails) == (False, False, True)
    assert check.reason == "no server metrics were sampled (source: none)"
    stage, _ = judge([{"server": "db_pool_waiting", "below": 1, "optional": True}], document=None)
    assert stage.passed and stage.checks[-1].outcome == "not judged"


def test_a_windowed_threshold_the_master_recorded_no_windows_for_is_not_judged():
    stage, _ = judge([{"stat": "p95", "below": 200, "endpoint": "GET /listings", "window_s": 5}])
    check = stage.checks[-1]
    assert check.endpoint == "GET /listings" and not check.judged and check.fails
    assert "recorded no rolling windows" in check.reason
