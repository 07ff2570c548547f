"""``stampede run`` as a user types it: real subprocess, real demo target, exit codes as documented."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from stampede.infra.demo_target.server import DemoTarget
from stampede.core.netutil import free_port

CLI = [sys.executable, "-m", "stampede.surfaces.cli", "run"]


def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.integration
def test_smoke_run_passes_writes_results_and_cleans_up(tmp_path):
    with DemoTarget(workdir=tmp_path / "target") as target:
        base_url = target.base_url
        completed = _run("--target", base_url, "--scenario", "smoke", "--workers", "1", "--out", str(tmp_path / "out"))
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["verdict"] == "pass"
    assert results["target"] == base_url
    (stage,) = results["stages"]
    assert stage["requests"] > 0 and stage["p50_ms"] <= stage["p95_ms"] <= stage["p99_ms"] <= stage["max_ms"]
    assert {e["name"] for e in stage["endpoints"]} >= {"GET /escrows", "GET /listings"}  # logins fall in the ramp
    assert results["cleanup"]["left"] == 0 and results["cleanup"]["created"] > 0
    assert (tmp_path / "out" / "report.html").exists()
    assert "verdict: PASS" in completed.stdout
    assert "[stampede] stage=smoke" in completed.stderr  # progress lines while the load runs


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["--target", "http://10.20.30.40:8000/v1", "--scenario", "smoke"],
                     "target: host 10.20.30.40 is not listed", id="unlisted-host"),
        pytest.param(["--target", "https://api.crm.example.invalid/v1", "--scenario", "smoke"],
                     "belongs to production", id="production-host"),
        pytest.param(["--target", "ftp://127.0.0.1/v1", "--scenario", "smoke"], "is not an http(s) URL", id="bad-url"),
        pytest.param(["--target", "http://127.0.0.1:{port}/v1", "--scenario", "no-such-scenario"],
                     "no scenario named 'no-such-scenario'", id="unknown-scenario"),
        pytest.param(["--target", "http://127.0.0.1:{port}/v1", "--scenario", "smoke"],
                     "/health is not healthy", id="target-down"),
        pytest.param(["--target", "http://127.0.0.1:{port}/v1", "--scenario", "smoke", "--users", "50000"],
                     "exceeds the local cap", id="over-user-cap"),
    ],
)
def test_refusals_exit_2_with_one_line_and_send_nothing(args, expected):
    port = free_port()  # nothing listens here: any request would fail loudly, none is made before refusal
    completed = _run(*[a.format(port=port) for a in args], timeout=60)
    assert completed.returncode == 2, completed.stderr
    (line,) = [l for l in completed.stderr.splitlines() if l.startswith("stampede: refused:")]
    assert expected in line and "fix:" in line


def test_bad_scenario_file_names_the_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\njourneys: {agent: 1}\nstages:\n  - {name: s, users: -3, spawn_rate: 1, duration_s: 5}\n")
    completed = _run("--target", f"http://127.0.0.1:{free_port()}/v1", "--scenario", str(bad), timeout=60)
    assert completed.returncode == 2
    assert "stages[0].users: must be a whole number" in completed.stderr
