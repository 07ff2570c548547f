"""The report's analysis sections: summary first, server metrics, bottlenecks, baseline, trend, capacity, GX."""

from __future__ import annotations

import json
import re

from stampede.render.report import render_report
from stampede.core.records import RunResult

T0 = 1_760_000_000


def stage(name: str, users: int, rps: float, p95: float) -> dict:
    return {"name": name, "scenario": "nightly", "users": users, "duration_s": 60, "requests": int(rps * 60),
            "failures": 0, "rps": rps, "p50_ms": p95 / 3, "p95_ms": p95, "p99_ms": p95 * 2, "max_ms": p95 * 3,
            "error_rate": 0.0, "endpoints": [{"name": "GET /listings", "requests": int(rps * 60), "failures": 0,
                                               "p50_ms": p95 / 3, "p95_ms": p95, "p99_ms": p95 * 2}]}


def analysed_result() -> RunResult:
    stages = [stage("normal", 100, 50, 40), stage("peak", 500, 220, 90), stage("stress", 1000, 260, 400)]
    series = [{"t": T0 + i, "stage": stages[i // 20]["name"], "phase": "steady", "users": stages[i // 20]["users"],
               "requests": 50, "failures": 0, "p50_ms": 10.0, "p95_ms": 40.0, "p99_ms": 80.0} for i in range(60)]
    return RunResult.from_dict({
        "run_id": "nightly-1", "scenario": "nightly", "target": "http://127.0.0.1:8000/v1", "verdict": "fail",
        "started_at": "2026-01-02T02:00:00+00:00", "finished_at": "2026-01-02T02:03:00+00:00",
        "stages": stages, "series": series,
        "validation": {"success": False, "suite_name": "stampede-stages", "statistics": {
            "evaluated_expectations": 2, "successful_expectations": 1}, "results": [
            {"success": True, "expectation_config": {"type": "expect_column_max_to_be_between",
             "kwargs": {"column": "p95_ms"}, "meta": {"stage": "normal", "op": "<", "threshold": 200}},
             "result": {"observed_value": 40}},
            {"success": False, "expectation_config": {"type": "expect_column_max_to_be_between",
             "kwargs": {"column": "p95_ms"}, "meta": {"stage": "stress", "op": "<", "threshold": 200}},
             "result": {"observed_value": 400}}]},
        "server": {"source": "prometheus", "url": "http://127.0.0.1:8000/metrics", "errors": 0, "series": {
            "db_pool_in_use": {"role": "pool_in_use", "unit": "connections", "samples": 30, "min": 0, "max": 8,
                               "mean": 5, "per_stage": {"stress": {"mean": 8, "max": 8}}}}},
        "bottlenecks": [{"rank": 1, "kind": "resource_saturated", "subject": "database pool", "score": 100,
                         "title": "First resource to saturate: database connection pool exhausted",
                         "evidence": ["database pool fully in use (8/8) with threads waiting from 41 s"],
                         "at_users": 1000, "at_s": 41}],
        "comparison": {"baseline_run_id": "nightly-0", "baseline_started_at": "2026-01-01T02:00:00+00:00",
                       "why": "the last passing run", "verdict": "regressed",
                       "tolerance": {"relative": 0.25, "floor_ms": 10, "min_requests": 30, "error_rate_abs": 0.01,
                                     "min_prob_slower": 0.65},
                       "regressions": [{"stage": "stress", "endpoint": "GET /listings", "why": "p95 100 → 400 ms"}],
                       "stages": [{"name": "stress", "requests": 900, "baseline_requests": 880, "p95_ms": 400,
                                   "baseline_p95_ms": 100, "verdict": "regressed", "endpoints": [
                                       {"name": "GET /listings", "requests": 900, "baseline_requests": 880,
                                        "p95_ms": 400, "baseline_p95_ms": 100, "change_ms": 300, "prob_slower": 0.93,
                                        "verdict": "regressed", "why": "p95 100 → 400 ms"}]}]},
        "trend": [{"run_id": f"nightly-{i}", "started_at": f"2026-01-0{i + 1}T02:00:00+00:00",
                   "verdict": "pass" if i == 0 else "fail",
                   "stages": {"stress": {"users": 1000, "p95_ms": 100 + 300 * i, "rps": 260, "error_rate": 0}}}
                  for i in range(2)],
        "recommendations": {"holds_now": "The target held 500 users.", "limited_by": "Database pool",
                            "actions": ["Database pool: raise the pool size (now 8)."],
                            "goal": {"users": 10000, "text": "10,000 users is ×20 the load held now."},
                            "generators": {"text": "For 10,000 users: 2 worker processes."}},
    })


def test_analysis_sections_render_offline_with_their_charts(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "server_metrics.json").write_text(json.dumps({"source": "prometheus", "interval_s": 2, "series": {
        "db_pool_in_use": {"role": "pool_in_use", "unit": "", "points": [[T0 + i, min(i / 5, 8)] for i in range(0, 60, 2)]},
        "cpu_pct": {"role": "cpu", "unit": "%", "points": [[T0 + i, 40 + i] for i in range(0, 60, 2)]}}}))
    html = render_report(analysed_result(), out).read_text()
    order = ["Against the baseline", "<h2>Stages</h2>", "<h2>Server metrics</h2>", "<h2>Bottlenecks</h2>",
             "<h2>Baseline comparison</h2>", "<h2>Trend</h2>", "<h2>Breaking point and capacity</h2>",
             "<h2>Scaling recommendations</h2>", "<h2>Validation (Great Expectations)</h2>"]
    positions = [html.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert "regressed: stress · GET /listings" in html and "Top bottleneck:" in html
    assert "expect_column_max_to_be_between" in html and "1 of 2 expectations met" in html
    assert html.count("<svg") == 5  # load, latency, server, capacity, trend
    for chart in ("server", "capacity", "trend"):
        assert (out / "charts" / f"{chart}.png").read_bytes()[:4] == b"\x89PNG"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "<link" not in html and "<script" not in html and "@import" not in html


def test_a_run_without_analysis_still_renders(tmp_path):
    result = analysed_result()
    result.server, result.bottlenecks, result.comparison, result.trend, result.recommendations = {}, [], {}, [], {}
    result.validation = {}
    html = render_report(result, tmp_path / "out").read_text()
    assert "No bottleneck showed" in html and "No Great Expectations results" in html
