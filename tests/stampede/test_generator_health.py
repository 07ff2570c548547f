"""A starved load generator makes the run "invalid" (exit 3), never "fail".

The integration test starves a real generator: the CLI (and so its Locust
process) is pinned to one core, and a CPU burner shares that core for the
length of the load. The generator then shows only about half a core of CPU,
which a CPU-only check would call healthy, but it is runnable all the time
(CPU plus run-queue wait near 100 %): it is saturated, and the report says the
generator, not the target, was the limit, and how many workers to use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import yaml

from stampede.infra.fixed_latency_target import FixedLatencyTarget
from stampede.load.runner import GeneratorSample
from stampede.figures.generator import generator_health, recommended_workers

BURNER = "import time\nend = time.time() + {seconds}\nwhile time.time() < end:\n    pass\n"

LOCUSTFILE = """
from locust import task
from locust.contrib.fasthttp import FastHttpUser

class BusyUser(FastHttpUser):
    @task
    def poll(self):
        self.client.get("/escrows", name="/escrows")
"""


def _samples(cpu: float, wait: float, *, pid: int = 7, role: str = "master", n: int = 8) -> list[GeneratorSample]:
    return [GeneratorSample(t=100.0 + i, role=role, pid=pid, cpu_pct=cpu, rss_mib=50.0, wait_pct=wait) for i in range(n)]


@pytest.mark.parametrize(
    ("cpu", "wait", "saturated"),
    [
        pytest.param(95.0, 0.0, True, id="busy-on-its-own"),
        pytest.param(48.0, 50.0, True, id="starved-sharing-a-core"),
        pytest.param(40.0, 10.0, False, id="healthy"),
    ],
)
def test_saturation_counts_what_the_generator_wanted(cpu, wait, saturated):
    stages = [{"start": 99.0, "end": 120.0}]
    health, bad = generator_health(_samples(cpu, wait), stages, limit_pct=85.0)
    assert health.saturated is saturated and bad == ({0} if saturated else set())
    assert health.cpu_max_pct == cpu and health.demand_max_pct == cpu + wait
    if saturated:
        assert health.recommended_workers >= 2 and "not the target, was the limit" in health.advice
    else:
        assert health.advice == ""


def test_recommended_workers_keep_headroom_under_the_limit():
    assert recommended_workers(2, 95.0, 85.0, saturated=True) == 3  # 190 % of work / 63.75 % each
    assert recommended_workers(4, 20.0, 85.0, saturated=False) == 2  # fewer would do
    assert recommended_workers(1, 100.0, 85.0, saturated=True) == 2
    assert recommended_workers(0, 100.0, 85.0, saturated=True) is None


@pytest.mark.integration
@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs Linux CPU affinity")
def test_starved_generator_makes_the_run_invalid_with_exit_3(tmp_path):
    core = max(os.sched_getaffinity(0))
    (tmp_path / "busy.py").write_text(LOCUSTFILE)
    scenario = tmp_path / "busy.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "busy", "journeys": {"BusyUser": 1}, "think_time_s": [0, 0], "locustfile": "busy.py",
        "stages": [{"name": "hold", "users": 50, "spawn_rate": 50, "duration_s": 12}],
        "thresholds": {"p95_ms": 5000, "error_rate": 0.5},
        "cleanup": "none",  # it creates nothing
    }))
    out = tmp_path / "out"
    burner = subprocess.Popen([sys.executable, "-c", BURNER.format(seconds=60)])
    try:
        os.sched_setaffinity(burner.pid, {core})
        with FixedLatencyTarget(1.0, tmp_path) as target:
            cli = subprocess.Popen(
                [sys.executable, "-m", "stampede.surfaces.cli", "run", "--target", target.base_url, "--scenario", str(scenario),
                 "--workers", "0", "--out", str(out)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                preexec_fn=lambda: os.sched_setaffinity(0, {core}),  # the generator shares the burner's core
            )
            deadline = time.time() + 90
            while not (out / "locust_output.json").exists() and cli.poll() is None and time.time() < deadline:
                time.sleep(0.5)
            burner.kill()  # the load is over: validation need not share the core
            stdout, stderr = cli.communicate(timeout=180)
    finally:
        if burner.poll() is None:
            burner.kill()
        burner.wait()

    assert cli.returncode == 3, stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["verdict"] == "invalid"
    generator = results["generator"]
    assert generator["saturated"] is True
    assert generator["demand_max_pct"] > 85
    assert generator["cpu_max_pct"] < 85  # CPU use alone would have called this generator healthy
    assert generator["recommended_workers"] >= 2
    assert "the load generator, not the target, was the limit" in generator["advice"]
    assert results["stages"][0]["valid"] is False
    assert "SATURATED" in stdout and "verdict: INVALID" in stdout
