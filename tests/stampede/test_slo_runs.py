"""Real runs through ``stampede run`` against the demo target with one route made slow (``GET /v1/listings``).

They must fail exactly that route's thresholds, abort when its window says so and not before its
delay, never pass a threshold on an endpoint that received nothing, fail (and abort) on the
target's own pool-waiting metric, and leave a JUnit report and a summary that CI can read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from junitparser import Failure, JUnitXml, Skipped

from stampede.infra.demo_target.server import DemoTarget

pytestmark = pytest.mark.integration

SLOW = {"GET /v1/listings": 100}


def run_cli(tmp_path: Path, target: str, scenario: dict) -> tuple[subprocess.CompletedProcess, dict, JUnitXml]:
    path = tmp_path / "slo.yaml"
    path.write_text(yaml.safe_dump(scenario))
    env = dict(os.environ, STAMPEDE_HISTORY_URL=f"sqlite:///{tmp_path / 'history.sqlite'}")
    completed = subprocess.run(
        [sys.executable, "-m", "stampede.surfaces.cli", "run", "--target", target, "--scenario", str(path),
         "--workers", "0", "--out", str(tmp_path / "out"), "--junit", str(tmp_path / "ci" / "junit.xml"),
         "--summary-json", str(tmp_path / "ci" / "summary.json")],
        capture_output=True, text=True, timeout=300, env=env)
    summary = json.loads((tmp_path / "ci" / "summary.json").read_text())
    return completed, summary, JUnitXml.fromfile(str(tmp_path / "ci" / "junit.xml"))


def failing(summary: dict) -> set[str]:
    return {t["name"] for t in summary["thresholds"] if t["outcome"] == "fail"
            or (t["outcome"] == "not judged" and not t["optional"])}


def test_only_the_slow_route_fails_and_it_aborts_when_its_window_says_so_not_before_its_delay(tmp_path):
    scenario = {
        "name": "slo", "journeys": {"agent": 60, "broker": 20, "readonly": 20}, "think_time_s": [0.1, 0.3],
        "stages": [{"name": "hold", "users": 6, "spawn_rate": 6, "duration_s": 45}],
        "thresholds": [
            {"stat": "p95", "below": 80, "endpoint": "GET /listings", "abort": True, "delay_s": 8, "window_s": 3},
            {"stat": "p95", "below": 80, "endpoint": "GET /escrows", "abort": True, "delay_s": 3, "window_s": 3},
            {"stat": "p90", "below": 80, "pattern": "GET /escrows.*", "each": True},
            {"stat": "error_rate", "below": 0.01, "endpoints": ["POST /escrows", "GET /escrows/{id}"], "name": "escrow calls"},
            {"stat": "p99.9", "below": 2000},
            {"stat": "p95", "below": 80, "endpoint": "GET /nothing-here"},
            {"stat": "p50", "below": 50, "endpoint": "DELETE /never", "optional": True},
        ],
    }
    with DemoTarget(workdir=tmp_path / "target", extra_latency_ms=SLOW) as target:
        completed, summary, junit = run_cli(tmp_path, target.base_url, scenario)
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert summary["verdict"] == "fail" and summary["exit_code"] == 1 and not summary["passed"]
    assert failing(summary) == {"GET /listings p95 < 80 ms over 3 s windows", "GET /nothing-here p95 < 80 ms"}
    passed = {t["name"] for t in summary["thresholds"] if t["outcome"] == "pass"}
    assert {"GET /escrows p95 < 80 ms over 3 s windows", "GET /escrows p90 < 80 ms", "GET /escrows/{id} p90 < 80 ms",
            "escrow calls", "p99.9 < 2000 ms"} <= passed
    missing = next(t for t in summary["thresholds"] if t["name"] == "GET /nothing-here p95 < 80 ms")
    assert missing["value"] is None and "no requests to GET /nothing-here" in missing["reason"]
    optional = next(t for t in summary["thresholds"] if t["name"] == "DELETE /never p50 < 50 ms")
    assert (optional["outcome"], optional["optional"]) == ("not judged", True)

    # the abort: the slow route's window, once its 8 s delay into the steady part had passed
    output = json.loads((tmp_path / "out" / "locust_output.json").read_text())
    stopped, steady_from = output["stopped"], output["stages"][0]["steady_from"]
    assert stopped["kind"] == "abort" and stopped["breach"]["endpoint"] == "GET /listings"
    assert 8 <= stopped["at"] - steady_from < 20, (stopped["at"], steady_from)
    assert [b["endpoint"] for b in summary["breaches"]] == ["GET /listings"]  # the fast route never breached
    assert stopped["at"] - output["stages"][0]["start"] < 35  # long before the planned 45 s of load

    results = {(s.name, c.name): c.result for s in junit for c in s}
    assert isinstance(results[("hold", "GET /listings p95 < 80 ms over 3 s windows")][0], Failure)
    assert "limit < 80 ms" in results[("hold", "GET /listings p95 < 80 ms over 3 s windows")][0].message
    assert isinstance(results[("hold", "GET /nothing-here p95 < 80 ms")][0], Failure)
    assert isinstance(results[("hold", "DELETE /never p50 < 50 ms")][0], Skipped)
    assert results[("hold", "GET /escrows p95 < 80 ms over 3 s windows")] == []
    stage_failures = [name for (suite, name), result in results.items()
                      if suite == "hold" and result and isinstance(result[0], Failure)]
    assert sorted(stage_failures) == ["GET /listings p95 < 80 ms over 3 s windows", "GET /nothing-here p95 < 80 ms",
                                      "stage hold"]


def test_a_server_side_threshold_fails_and_aborts_on_the_targets_pool_waiting(tmp_path):
    """One connection and a slow route: threads queue for the pool, which the target's /metrics shows."""
    scenario = {
        "name": "pool", "journeys": {"agent": 60, "broker": 20, "readonly": 20}, "think_time_s": [0.1, 0.3],
        "stages": [{"name": "busy", "users": 6, "spawn_rate": 6, "duration_s": 45}],
        "thresholds": [
            {"server": "db_pool_waiting", "stat": "max", "below": 1, "abort": True, "delay_s": 4, "window_s": 4},
            {"server": "cpu_pct", "stat": "mean", "below": 100000},
            {"server": "http_5xx_per_s", "below": 100000},
            {"server": "no_such_series", "below": 1},
        ],
    }
    with DemoTarget(workdir=tmp_path / "target", pool_size=1, extra_latency_ms=SLOW) as target:
        completed, summary, junit = run_cli(tmp_path, target.base_url, scenario)
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert failing(summary) == {"server db_pool_waiting max < 1 over 4 s windows", "server no_such_series max < 1"}
    pool = next(t for t in summary["thresholds"] if t["name"] == "server db_pool_waiting max < 1 over 4 s windows")
    assert pool["source"] == "server" and pool["value"] >= 1
    unsampled = next(t for t in summary["thresholds"] if t["name"] == "server no_such_series max < 1")
    assert unsampled["outcome"] == "not judged" and "was not sampled" in unsampled["reason"]
    assert summary["stopped"]["kind"] == "abort" and "db_pool_waiting" in summary["stopped"]["reason"]
    output = json.loads((tmp_path / "out" / "locust_output.json").read_text())
    assert output["stopped"]["at"] - output["stages"][0]["steady_from"] >= 7  # window 4 + 3 s: not before
    assert output["stopped"]["at"] - output["stages"][0]["start"] < 35  # long before the planned 45 s
    assert not (tmp_path / "out" / "server_metrics.live.json").exists()  # the live file goes with the run
    results = {(s.name, c.name): c.result for s in junit for c in s}
    assert isinstance(results[("busy", "server db_pool_waiting max < 1 over 4 s windows")][0], Failure)
    assert results[("busy", "server cpu_pct mean < 100000")] == []


def test_a_refused_run_still_leaves_its_junit_and_summary(tmp_path):
    completed = subprocess.run(
        [sys.executable, "-m", "stampede.surfaces.cli", "run", "--target", "http://127.0.0.1:9/v1", "--scenario",
         str(tmp_path / "missing.yaml"), "--junit", str(tmp_path / "junit.xml"), "--summary-json",
         str(tmp_path / "summary.json")], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2, completed.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["verdict"], summary["exit_code"]) == ("refused", 2) and "missing.yaml" in summary["failures"][0]
    (case,) = [c for s in JUnitXml.fromfile(str(tmp_path / "junit.xml")) for c in s]
    assert case.is_error and "missing.yaml" in case.result[0].message
