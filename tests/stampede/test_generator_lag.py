"""A generator whose event loop is delayed makes the run "invalid", though its CPU is low.

The delayed generator's users block the loop without yielding (the unpatched
``time.sleep``, as an unpatched library call would): the process is neither busy
nor waiting for a core, so CPU and run-queue wait call it healthy, but every
response that arrives meanwhile sits in its socket and is timed late. The probe
inside the Locust process (``stampede.load.loop_lag``) sees the loop answer
late; the health check flags the stage. The same users yielding instead are healthy.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from stampede.core.histogram import LatencyHistogram
from stampede.figures.generator import generator_health
from stampede.infra.fixed_latency_target import FixedLatencyTarget
from stampede.load.loop_lag import LoopLagProbe, summary

LOCUSTFILE = """
import time
from gevent import monkey
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

blocking_sleep = monkey.get_original("time", "sleep")
BLOCK_S = {block_s}

class PollUser(FastHttpUser):
    wait_time = constant(0.05)

    @task
    def poll(self):
        self.client.get("/escrows", name="/escrows")
        if BLOCK_S:
            blocking_sleep(BLOCK_S)  # holds the event loop: no other greenlet runs meanwhile
        else:
            time.sleep(0.02)  # patched: yields to the loop
"""


def test_lag_above_the_limit_flags_the_stage_even_at_low_cpu():
    stages = [{"start": 99.0, "end": 120.0, "loop_lag_p95_ms": 16.0}, {"start": 120.0, "end": 140.0, "loop_lag_p95_ms": 0.4}]
    health, bad = generator_health([], stages, limit_pct=85.0, lag_limit_ms=10.0)
    assert bad == {0} and health.saturated and health.delayed
    assert health.loop_lag_p95_ms == 16.0 and "event loop answered 16.0 ms late" in health.advice
    healthy, none = generator_health([], [stages[1]], limit_pct=85.0, lag_limit_ms=10.0)
    assert none == set() and not healthy.saturated and not healthy.delayed and healthy.advice == ""


def test_probe_records_how_late_the_loop_woke():
    import gevent
    from gevent import monkey

    probe = LoopLagProbe(interval_s=0.01).start()
    gevent.sleep(0.2)  # idle loop: on time
    blocking = monkey.get_original("time", "sleep")
    for _ in range(5):
        blocking(0.03)  # the loop is held: the probe wakes late
        gevent.sleep(0.011)
    probe.stop()
    figures = summary(LatencyHistogram.merged(probe.drain().values()))
    assert figures["loop_lag_probes"] >= 10
    assert figures["loop_lag_max_ms"] >= 15.0


def _run(tmp_path, block_s: float) -> dict:
    folder = tmp_path / f"block-{block_s}"
    folder.mkdir()
    (folder / "poll.py").write_text(LOCUSTFILE.format(block_s=block_s))
    scenario = folder / "poll.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "poll", "journeys": {"PollUser": 1}, "think_time_s": [0.05, 0.05], "locustfile": "poll.py",
        "stages": [{"name": "hold", "users": 20, "spawn_rate": 20, "duration_s": 10}],
        "thresholds": {"p95_ms": 5000, "error_rate": 0.5}, "cleanup": "none",
    }))
    out = folder / "out"
    with FixedLatencyTarget(2.0, folder) as target:
        cli = subprocess.run(
            [sys.executable, "-m", "stampede.surfaces.cli", "run", "--target", target.base_url, "--scenario", str(scenario),
             "--workers", "0", "--out", str(out)], capture_output=True, text=True, timeout=180)
    results = json.loads((out / "results.json").read_text())
    return {"code": cli.returncode, "stderr": cli.stderr, "results": results,
            "output": json.loads((out / "locust_output.json").read_text())}


def test_delayed_generator_is_invalid_and_a_healthy_one_is_not(tmp_path):
    delayed = _run(tmp_path, 0.025)
    healthy = _run(tmp_path, 0.0)

    generator = delayed["results"]["generator"]
    assert delayed["code"] == 3, delayed["stderr"][-3000:]
    assert delayed["results"]["verdict"] == "invalid"
    assert generator["delayed"] is True and generator["loop_lag_p95_ms"] > generator["loop_lag_limit_ms"]
    assert generator["cpu_max_pct"] < 85 and generator["demand_max_pct"] < 85  # CPU alone would call it healthy
    assert delayed["results"]["stages"][0]["valid"] is False
    assert delayed["results"]["stages"][0]["p95_ms"] > 2.0 + 10.0  # the delay is in the latency it reported
    assert "event loop was late" in (tmp_path / "block-0.025" / "out" / "report.html").read_text()

    assert healthy["code"] == 0, healthy["stderr"][-3000:]
    assert healthy["results"]["verdict"] == "pass"
    assert healthy["results"]["generator"]["delayed"] is False
    assert healthy["output"]["stages"][0]["loop_lag_probes"] > 100
    assert healthy["results"]["generator"]["loop_lag_p95_ms"] <= healthy["results"]["generator"]["loop_lag_limit_ms"]
    assert healthy["results"]["stages"][0]["valid"] is True
