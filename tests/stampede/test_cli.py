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


# -- honest exits: every path ends with its own code (stampede.core.verdict.Exit) -----------------------
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["--duration", "0"], "duration_s: must be a whole number from 1", id="duration-zero"),
        pytest.param(["--duration", "-5"], "duration_s: must be a whole number from 1", id="duration-negative"),
        pytest.param(["--users", "0"], "users: must be a whole number from 1", id="users-zero"),
        pytest.param(["--workers", "-1"], "workers: must be a whole number from 0", id="workers-negative"),
        pytest.param(["--scenario", "smoke"], "'smoke' is listed twice", id="same-scenario-twice"),
        pytest.param(["--target", "http://prod.example.com\\@127.0.0.1:{port}/v1"], "contains a backslash",
                     id="backslash-url"),
        pytest.param(["--target", "http://user:pw@127.0.0.1:{port}/v1"], "user name or password", id="credentials"),
    ],
)
def test_impossible_inputs_exit_2_with_one_line_and_send_nothing(args, expected):
    port = free_port()
    base = ["--target", f"http://127.0.0.1:{port}/v1", "--scenario", "smoke", "--workers", "0"]
    if "--target" in args:
        base = base[2:]
    completed = _run(*base, *[a.format(port=port) for a in args], timeout=60)
    assert completed.returncode == 2, completed.stderr[-2000:]
    (line,) = [l for l in completed.stderr.splitlines() if l.startswith("stampede: refused:")]
    assert expected in line and "fix:" in line
    assert "Traceback" not in completed.stderr


def test_an_internal_error_exits_5_not_1(tmp_path):
    """A broken dependency (here: a state database that cannot be opened) is not a breached threshold."""
    import os

    env = dict(os.environ, STAMPEDE_STATE_URL=f"sqlite:///{tmp_path}/no/such/folder/state.sqlite")
    completed = subprocess.run([*CLI, "--target", f"http://127.0.0.1:{free_port()}/v1", "--scenario", "smoke",
                                "--workers", "0"], capture_output=True, text=True, timeout=120, env=env)
    assert completed.returncode == 5, completed.stderr[-2000:]
    assert "stampede: internal error" in completed.stderr.splitlines()[-1]


class StickyTarget:
    """A target whose tagged test data cannot be deleted: every search finds three entities, every DELETE is 403."""

    def __init__(self) -> None:
        import json as jsonlib
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from urllib.parse import parse_qs, urlsplit

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _send(self, status: int, body: dict | None = None) -> None:
                data = jsonlib.dumps(body).encode() if body is not None else b""
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802 - http.server's naming
                parts = urlsplit(self.path)
                tag = parse_qs(parts.query).get("search", [""])[0]
                field = "property_address" if parts.path.endswith("/escrows") else "address"
                items = [{"id": i, field: f"{i} Elm St {tag}"} for i in range(3)] if tag else []
                self._send(200, {"items": items, "total": len(items)})

            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._send(200, {"token": "sticky-token"})

            def do_DELETE(self):  # noqa: N802
                self._send(403, {"detail": "nobody may delete here"})

            def log_message(self, *_args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.integration
def test_a_run_that_leaves_test_data_exits_4_and_never_reads_as_a_plain_pass(tmp_path):
    from pathlib import Path

    import yaml

    scenario = tmp_path / "poll.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "poll", "locustfile": str(Path(__file__).with_name("polling_locustfile.py")),
        "journeys": {"PollingUser": 1}, "think_time_s": [0.1, 0.2],
        "stages": [{"name": "hold", "users": 2, "spawn_rate": 2, "duration_s": 3}],
    }))
    target = StickyTarget()
    try:
        completed = _run("--target", target.base_url, "--scenario", str(scenario), "--workers", "0",
                         "--out", str(tmp_path / "out"), timeout=300)
    finally:
        target.close()
    assert completed.returncode == 4, completed.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["verdict"] == "pass" and results["cleanup"]["left"] == 6 and not results["cleanup"]["ok"]
    lines = [line for line in completed.stdout.splitlines() if line.strip()]
    assert lines[0].startswith("CLEANUP INCOMPLETE: 6 test entities")  # what was left comes first
    assert not any(line.strip() == "verdict: PASS" for line in lines)
    assert any("verdict: PASS — but test data was left" in line for line in lines)
    assert "test data left on the target: 6 entities" in completed.stderr
    slack = (tmp_path / "out" / "slack_messages.jsonl").read_text()
    assert "CLEANUP INCOMPLETE" in slack
    assert "CLEANUP INCOMPLETE" in (tmp_path / "out" / "report.html").read_text()
