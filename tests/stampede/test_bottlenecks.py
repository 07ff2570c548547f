"""Bottlenecks: ranked findings with evidence, on synthetic runs and on a real demo target with a tiny pool."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stampede.analysis.bottlenecks import find_bottlenecks
from stampede.analysis.recommendations import recommend
from stampede.core.records import EndpointResult, GeneratorHealth, PhaseFigures, RunResult, SeriesPoint, StageResult

T0 = 1_760_000_000


def series(users_by_second: list[int], stage_of=lambda i: "s") -> list[SeriesPoint]:
    return [SeriesPoint(t=T0 + i, stage=stage_of(i), phase="steady", users=u, requests=0, failures=0,
                        p50_ms=None, p95_ms=None, p99_ms=None) for i, u in enumerate(users_by_second)]


def server(**roles) -> dict:
    return {"series": {name: {"role": role, "unit": "", "points": points} for name, (role, points) in roles.items()}}


def stage(name, users, endpoints, passed=True, duration_s=60.0) -> StageResult:
    requests = sum(e.requests for e in endpoints)
    failures = sum(e.failures for e in endpoints)
    return StageResult(
        name=name, scenario="x", users=users, duration_s=duration_s, requests=requests, failures=failures,
        rps=users / 2, p50_ms=None, p95_ms=max(e.p95_ms for e in endpoints), p99_ms=None, max_ms=None,
        error_rate=failures / requests, endpoints=endpoints, passed=passed,
        steady=PhaseFigures(duration_s=duration_s, requests=requests, failures=failures, rps=requests / duration_s,
                            p50_ms=None, p95_ms=None, p99_ms=None, error_rate=0.0),
    )


def ep(name, p95, requests=100, errors=None) -> EndpointResult:
    return EndpointResult(name=name, requests=requests, failures=sum((errors or {}).values()), p50_ms=None,
                          p95_ms=p95, p99_ms=None, errors=errors or {})


def run(stages: list[StageResult], series_points: list[SeriesPoint] = (), **extra) -> RunResult:
    return RunResult(run_id="r", scenario="x", target="http://127.0.0.1:1/v1", verdict="pass", started_at="",
                     finished_at="", stages=stages, series=list(series_points), **extra)


def test_the_first_resource_to_saturate_ranks_first_with_the_load_it_happened_at():
    users = [min(i, 50) for i in range(60)]
    results = run([stage("s", 50, [ep("GET /a", 40)])], series(users))
    cpu = [[T0 + i, 95.0 if i >= 40 else 30.0] for i in range(0, 60, 2)]
    size = [[T0 + i, 4.0] for i in range(0, 60, 2)]
    used = [[T0 + i, 4.0 if i >= 20 else 2.0] for i in range(0, 60, 2)]
    waiting = [[T0 + i, 3.0 if i >= 20 else 0.0] for i in range(0, 60, 2)]
    findings = find_bottlenecks(results, server(cpu_pct=("cpu", cpu), pool_size=("pool_size", size),
                                                pool_in_use=("pool_in_use", used), pool_waiting=("pool_waiting", waiting)))
    assert [f.subject for f in findings[:2]] == ["database pool", "cpu_pct"]
    assert findings[1].title == "CPU saturated (cpu_pct)"
    first = findings[0]
    assert first.rank == 1 and first.at_users in (20, 21) and first.title.startswith("First resource")
    assert "4/4" in first.evidence[0] and "20 s into the run" in first.evidence[0]


def test_a_first_saturated_cpu_keeps_its_capitals():
    cpu = [[T0 + i, 97.0] for i in range(0, 20, 2)]
    (finding,) = find_bottlenecks(run([], series([5] * 20)), server(cpu_pct=("cpu", cpu)))
    assert finding.title == "First resource to saturate: CPU saturated (cpu_pct)"


def test_a_single_spike_is_not_saturation():
    cpu = [[T0 + i, 99.0 if i == 10 else 20.0] for i in range(0, 40, 2)]
    assert find_bottlenecks(run([], series([5] * 40)), server(cpu=("cpu", cpu))) == []


def test_endpoints_whose_latency_grows_fastest_with_load_and_errors_only_under_load():
    stages = [
        stage("low", 100, [ep("GET /a", 20), ep("GET /b", 30)]),
        stage("mid", 500, [ep("GET /a", 25), ep("GET /b", 150)]),
        stage("high", 1000, [ep("GET /a", 30), ep("GET /b", 400, errors={"HTTP 503: database pool exhausted": 40})]),
    ]
    findings = find_bottlenecks(run(stages), None)
    kinds = [(f.kind, f.subject) for f in findings]
    assert ("latency_growth", "GET /b") in kinds and ("latency_growth", "GET /a") not in kinds
    growth = next(f for f in findings if f.kind == "latency_growth")
    assert growth.evidence[0].startswith("p95 30 ms at 100 users (low) → 400 ms at 1000 users (high)")
    errors = next(f for f in findings if f.kind == "errors_under_load")
    assert "none at 100 users" in errors.evidence[0] and "first at 1000 users" in errors.evidence[0]


def test_memory_that_keeps_growing_through_a_long_stage_is_a_suspected_leak():
    memory = [[T0 + i, 100 + i * 0.05] for i in range(0, 600, 5)]  # 3 MiB a minute for ten minutes
    flat = [[T0 + i, 100.0] for i in range(0, 600, 5)]
    results = run([stage("soak", 200, [ep("GET /a", 20)], duration_s=600)], series([200] * 600, lambda i: "soak"))
    leak = find_bottlenecks(results, server(mem=("memory", memory)))
    assert [f.kind for f in leak] == ["memory_growth"] and "3.0" in leak[0].evidence[0]
    assert find_bottlenecks(results, server(mem=("memory", flat))) == []


def test_a_saturated_generator_outranks_everything_and_recommendations_say_what_to_do():
    results = run([stage("s", 50, [ep("GET /a", 40), ep("GET /b", 400), ep("GET /c", 30)])],
                  generator=GeneratorHealth(saturated=True, cpu_max_pct=97, limit_pct=85, processes=1, workers=1,
                                            recommended_workers=2))
    results.bottlenecks = find_bottlenecks(results, None)
    assert results.bottlenecks[0].kind == "generator_saturated"
    assert "generator CPU sat at 97 % (limit 85 %)" in results.bottlenecks[0].evidence[0]
    assert any(f.kind == "slow_endpoint" and f.subject == "GET /b" for f in results.bottlenecks)
    rec = recommend(results)
    assert "generator" in rec.actions[0].lower()
    assert rec.generators.workers >= 2 and "USD" in rec.generators.text


@pytest.mark.integration
def test_demo_target_with_a_tiny_pool_shows_the_pool_as_first_saturated(tmp_path):
    from stampede.infra.demo_target.server import DemoTarget

    scenario = tmp_path / "pool.yaml"
    scenario.write_text(
        "name: pool\njourneys: {agent: 60, broker: 20, admin: 5, readonly: 15}\nthink_time_s: [0.1, 0.4]\n"
        "stages:\n  - {name: busy, users: 10, spawn_rate: 10, duration_s: 10}\n"
        "thresholds: {p95_ms: 2000, error_rate: 0.5}\nabort_on_breach: false\n"
    )
    env = dict(os.environ, STAMPEDE_HISTORY_URL=f"sqlite:///{tmp_path / 'history.sqlite'}")
    with DemoTarget(workdir=tmp_path / "t", pool_size=1,
                    extra_latency_ms={"GET /v1/listings": 100, "GET /v1/escrows": 100}) as target:
        completed = subprocess.run(
            [sys.executable, "-m", "stampede.surfaces.cli", "run", "--target", target.base_url, "--scenario", str(scenario),
             "--workers", "0", "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=240, env=env)
    assert completed.returncode in (0, 1), completed.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    top = results["bottlenecks"][0]
    assert (top["kind"], top["subject"]) == ("resource_saturated", "database pool"), results["bottlenecks"]
    assert "1/1" in top["evidence"][0]
    assert results["server"]["series"]["db_pool_waiting"]["max"] >= 1
    assert "Database pool" in results["recommendations"]["actions"][0]
    html = (tmp_path / "out" / "report.html").read_text()
    assert "First resource to saturate: database connection pool exhausted" in html
    assert (tmp_path / "out" / "charts" / "server.png").read_bytes()[:4] == b"\x89PNG"
