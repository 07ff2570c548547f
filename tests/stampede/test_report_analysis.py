"""The report's analysis sections: summary first, server metrics, bottlenecks, baseline, trend, capacity, GX."""

from __future__ import annotations

import json
import re

import pytest

from stampede.render.report import render_report
from stampede.core.records import RunResult

T0 = 1_760_000_000


def stage(name: str, users: int, rps: float, p95: float) -> dict:
    return {"name": name, "scenario": "nightly", "users": users, "duration_s": 60, "requests": int(rps * 60),
            "failures": 0, "rps": rps, "p50_ms": p95 / 3, "p95_ms": p95, "p99_ms": p95 * 2, "max_ms": p95 * 3,
            "error_rate": 0.0, "passed": p95 < 200, "endpoints": [{"name": "GET /listings", "requests": int(rps * 60), "failures": 0,
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


SERVER_DOCUMENT = {"source": "prometheus", "interval_s": 2, "series": {
    "db_pool_in_use": {"role": "pool_in_use", "unit": "", "points": [[T0 + i, min(i / 5, 8)] for i in range(0, 60, 2)]},
    "cpu_pct": {"role": "cpu", "unit": "%", "points": [[T0 + i, 40 + i] for i in range(0, 60, 2)]}}}


def test_analysis_sections_render_offline_with_their_charts(tmp_path):
    out = tmp_path / "out"
    html = render_report(analysed_result(), out, server_document=SERVER_DOCUMENT).read_text()
    order = ["Against the baseline", "<h2>Stages</h2>", "<h2>Server metrics</h2>", "<h2>Bottlenecks</h2>",
             "<h2>Baseline comparison</h2>", "<h2>Trend</h2>", "<h2>Breaking point and capacity</h2>",
             "<h2>Scaling recommendations</h2>", "<h2>Validation (Great Expectations)</h2>"]
    positions = [html.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert "regressed: stress · GET /listings" in html and "Top bottleneck:" in html
    assert "grow by more than 25.00% or 10 ms (the larger)" in html and "probability ≥ 0.65" in html
    assert "<td>p95_ms</td><td>&lt; 200 ms</td>" in html and "<td class=\"n\">400 ms</td>" in html  # GX, in figures
    assert "expect_column_max_to_be_between" in html and "1 of 2 expectations met" in html
    assert html.count("<svg") == 5  # load, latency, server, capacity, trend
    for chart in ("server", "capacity", "trend"):
        assert (out / "charts" / f"{chart}.png").read_bytes()[:4] == b"\x89PNG"
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "<link" not in html and "<script" not in html and "@import" not in html


def test_a_run_without_analysis_still_renders(tmp_path):
    result = analysed_result()
    result.server, result.bottlenecks, result.comparison, result.trend, result.recommendations = None, [], None, [], None
    result.validation = {}
    html = render_report(result, tmp_path / "out").read_text()
    assert "No bottleneck showed" in html and "No Great Expectations results" in html
    assert "No baseline comparison." in html and "Source: none." in html


def test_the_report_reads_no_file_of_the_run_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "server_metrics.json").write_text(json.dumps(SERVER_DOCUMENT))

    html = render_report(analysed_result(), out).read_text()

    assert html.count("<svg") == 4  # load, latency, capacity, trend: the server chart needs the document passed in
    assert not (out / "charts" / "server.png").exists()


@pytest.mark.parametrize("left", [None, 12])
def test_recommendations_and_the_breaking_point_render_from_their_records(tmp_path, left):
    data = analysed_result().to_dict() | {
        "breaking_point": {"reason": "p95 above 200 ms", "found": True, "users": 500, "rps": 220.0, "p95_ms": 90.0,
                           "first_bad_users": 1000},
        "cleanup": {"created": 30, "deleted": 18, "left": left, "ok": left is not None},
        "capacity": {"model": "usl", "lambda_rps": 0.5, "sigma": 0.001, "kappa": 1e-6, "r_squared": 0.97, "points": 3,
                     "max_measured_users": 1000, "peak_users": 999.5, "peak_rps": 280.0},
        "cost": {"provider": "ecs", "workers": 2, "size": "fargate-1vcpu-2gb", "region": "us-east-1",
                 "estimate_usd": 0.0512, "actual_usd": 1.5, "worker_hours": 0.4167, "prices_as_of": "2025-06-01"},
    }
    html = render_report(RunResult.from_dict(data), tmp_path / "out").read_text()

    assert "Breaking point: <b>500 users</b> (220.0 req/s, p95 90 ms); it broke at 1,000 users." in html
    assert "<dt>for 10,000 users</dt><dd>10,000 users is ×20 the load held now.</dd>" in html
    assert "<dd>1.50 USD (0.42 worker-hours)</dd>" in html and "<dd>0.0512 USD</dd>" in html
    assert "USL fit" in html  # the capacity chart draws the model
    problem = "12 test entities left" if left else "unknown how many test entities are left"
    assert f"FAIL: thresholds breached in stress — and CLEANUP INCOMPLETE: {problem}" in html
