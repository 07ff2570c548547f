"""Every preflight refusal is one clear line and sends nothing to the target (a loopback canary counts).

Also: one run per target. A second run against a target whose lease another run
holds is refused before any request; after the first run's teardown, or when its
process is gone, a new run proceeds. The lease is keyed by the resolved address:
``localhost`` and ``127.0.0.1`` are one target.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

import pytest

from stampede.infra.canary import Canary
from stampede.core.errors import Refusal
from stampede.steps.preflight import HEALTH_ATTEMPTS, RunRequest, preflight
from stampede.steps.teardown import release_target, teardown_workers
from stampede.safety import lease as target_lock
from stampede.safety.health import probe

CLI = [sys.executable, "-m", "stampede.surfaces.cli", "run"]


@pytest.fixture
def canary():
    with Canary() as server:
        yield server


@pytest.fixture
def kill_file(tmp_path, monkeypatch):
    path = tmp_path / "KILL_SWITCH"
    monkeypatch.setenv("STAMPEDE_KILL_SWITCH_FILE", str(path))
    return path


def _preflight(target: str, **kwargs):
    kwargs.setdefault("scenarios", ["smoke"])
    kwargs.setdefault("run_id", "preflight-test")
    kwargs.setdefault("workers", 0)
    options = {k: kwargs.pop(k) for k in ("kill_switch", "environments_text", "lease_pid", "now") if k in kwargs}
    return preflight(RunRequest(target=target, **kwargs), **options)


def _env(canary_url: str, *, production: str = "", hours: str = "", max_users: int = 20000) -> str:
    return json.dumps({"environments": {
        "local": {"allow_load": True, "max_users": max_users, **({"allowed_hours": hours} if hours else {})},
        "production": {"allow_load": False, "base_urls": [production] if production else ["https://api.example.invalid/v1"]},
    }})


def _refusal(call) -> str:
    with pytest.raises(Refusal) as refused:
        call()
    text = str(refused.value)
    assert "\n" not in text and "fix:" in text, text
    return text


def test_production_by_address_is_refused_with_zero_requests(canary):
    # production lists the canary as "localhost"; the run asks for it as 127.0.0.1
    port = canary.base_url.split(":")[2].split("/")[0]
    text = _refusal(lambda: _preflight(canary.base_url, environments_text=_env(canary.base_url, production=f"http://localhost:{port}/v1")))
    assert "an address of localhost in production" in text
    assert canary.hits() == 0


def test_production_by_name_is_refused_with_zero_requests(canary):
    text = _refusal(lambda: _preflight(canary.base_url.replace("127.0.0.1", "localhost"),
                                       environments_text=_env(canary.base_url, production=canary.base_url.replace("127.0.0.1", "localhost"))))
    assert "belongs to production" in text
    assert canary.hits() == 0


def test_unknown_host_is_refused(canary):
    text = _refusal(lambda: _preflight("http://10.20.30.40:8000/v1"))
    assert "is not listed by any environment" in text
    assert canary.hits() == 0


def test_kill_switch_on_is_refused_with_zero_requests(canary, kill_file):
    kill_file.write_text("incident 42: staging on fire")
    text = _refusal(lambda: _preflight(canary.base_url))
    assert text.startswith("kill switch: incident 42: staging on fire") and str(kill_file) in text
    assert canary.hits() == 0


def test_kill_switch_env_var_is_refused(canary, monkeypatch):
    monkeypatch.setenv("STAMPEDE_KILL_SWITCH", "on")
    _refusal(lambda: _preflight(canary.base_url))
    assert canary.hits() == 0


def test_users_over_the_cap_are_refused_with_zero_requests(canary):
    text = _refusal(lambda: _preflight(canary.base_url, users=51, environments_text=_env(canary.base_url, max_users=50)))
    assert "users: 51 exceeds the local cap of 50" in text
    assert canary.hits() == 0


def test_outside_allowed_hours_is_refused_with_zero_requests(canary):
    noon = datetime(2026, 3, 4, 12, 0, tzinfo=timezone.utc)
    text = _refusal(lambda: _preflight(canary.base_url, now=noon, environments_text=_env(canary.base_url, hours="22:00-06:00")))
    assert "outside local's allowed hours" in text and "2026-03-04 22:00 UTC" in text
    assert canary.hits() == 0


def test_invalid_scenario_is_refused_with_zero_requests(canary, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\njourneys: {agent: 1}\nabort: {window_s: 0}\n"
                   "stages:\n  - {name: s, users: 1, spawn_rate: 1, duration_s: 5}\n")
    text = _refusal(lambda: _preflight(canary.base_url, scenarios=[str(bad)]))
    assert "abort.window_s: must be whole seconds" in text
    assert canary.hits() == 0


def test_unhealthy_target_is_refused_after_health_requests_only(canary):
    canary.health_status = 503
    text = _refusal(lambda: _preflight(canary.base_url))
    assert "/health is not healthy (HTTP 503)" in text
    assert canary.hits(exclude_health=True) == 0 and canary.hits() == HEALTH_ATTEMPTS
    assert target_lock.holder(canary.base_url) is None  # a refused run holds nothing


def test_redirecting_health_is_unhealthy_and_not_followed(canary):
    """A health endpoint that redirects (here: to the canary) is unhealthy, and the redirect is not followed."""

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            self.send_response(302)
            self.send_header("Location", canary.base_url + "/health")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        problem = probe(f"http://127.0.0.1:{server.server_address[1]}/v1", attempts=1)
    finally:
        server.shutdown()
        server.server_close()
    assert problem and "HTTP 302 redirect" in problem and "not followed" in problem
    assert canary.hits() == 0


def test_second_run_on_a_held_target_is_refused_until_teardown(canary):
    first = _preflight(canary.base_url, run_id="first-run")
    try:
        seen = canary.hits()
        text = _refusal(lambda: _preflight(canary.base_url, run_id="second-run"))
        assert "another run (run id first-run) is active on 127.0.0.1:" in text
        assert "stampede lease release first-run" in text
        assert canary.hits() == seen  # the refused run sent nothing
        # the same machine by another name is the same target
        text = _refusal(lambda: _preflight(canary.base_url.replace("127.0.0.1", "localhost"), run_id="second-run"))
        assert "another run (run id first-run) is active on localhost:" in text
        assert canary.hits() == seen
        # the same run may take its own lease again (a retried preflight)
        assert _preflight(canary.base_url, run_id="first-run").run_id == "first-run"
    finally:
        teardown_workers(first)
    second = _preflight(canary.base_url, run_id="second-run")
    teardown_workers(second)
    assert target_lock.holder(canary.base_url) is None


def test_a_dead_holders_lease_is_taken_over(canary):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target_lock.acquire(canary.base_url, run_id="crashed-cli", ttl_s=3600, pid=dead.pid)
    plan = _preflight(canary.base_url, run_id="after-crash")
    teardown_workers(plan)


def test_a_dag_runs_lease_holds_until_it_expires(canary):
    target_lock.acquire(canary.base_url, run_id="dag-run", ttl_s=1.0, pid=None)
    try:
        _refusal(lambda: _preflight(canary.base_url, run_id="other"))
        assert canary.hits() == 0
        time.sleep(1.1)
        teardown_workers(_preflight(canary.base_url, run_id="other"))
    finally:
        target_lock.release(run_id="dag-run")


@pytest.mark.integration
def test_cli_refuses_a_held_target_and_sends_nothing(canary):
    target_lock.acquire(canary.base_url, run_id="nightly-x", ttl_s=600, pid=os.getpid())
    try:
        completed = subprocess.run([*CLI, "--target", canary.base_url, "--scenario", "smoke", "--workers", "0"],
                                   capture_output=True, text=True, timeout=120)
    finally:
        target_lock.release(run_id="nightly-x")
    assert completed.returncode == 2, completed.stderr[-2000:]
    (line,) = [l for l in completed.stderr.splitlines() if l.startswith("stampede: refused:")]
    assert "another run (run id nightly-x)" in line
    assert canary.hits() == 0


@pytest.mark.integration
def test_cli_refuses_when_the_kill_switch_file_exists(canary, kill_file):
    kill_file.write_text("freeze")
    completed = subprocess.run([*CLI, "--target", canary.base_url, "--scenario", "smoke", "--workers", "0"],
                               capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert completed.returncode == 2
    assert "stampede: refused: kill switch: freeze" in completed.stderr
    assert canary.hits() == 0


def test_stock_journeys_without_the_accounts_password_are_refused_with_zero_requests(canary, monkeypatch):
    # every login would fail, and with it every request of the run: refused before any is sent
    monkeypatch.delenv("STAMPEDE_TARGET_PASSWORD", raising=False)
    text = _refusal(lambda: _preflight(canary.base_url))
    assert text == ("STAMPEDE_TARGET_PASSWORD: not set, and the stock journeys log every user in with it (every "
                    "request would fail); fix: set STAMPEDE_TARGET_PASSWORD in the environment where the run's "
                    "tasks run, to the target accounts' password")
    assert canary.hits() == 0
    monkeypatch.setenv("STAMPEDE_TARGET_PASSWORD", "LoadTest123!")
    plan = _preflight(canary.base_url)
    release_target(plan)
    assert plan.run_id == "preflight-test"
