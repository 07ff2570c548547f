"""Load owned by a heartbeat: real owners SIGKILLed mid-run, a canary target counting what still arrives.

The owner is the command line, or a process playing the stages as the Airflow task
does (``owner_process.py``, the workers provisioned by another process as the
provisioning task does). What is measured is when the last request reached the
target after the owner died, and which processes of the run are left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from stampede.infra.canary import Canary
from stampede.load import owner
from stampede.plan.scenario import DEFAULT_OWNER_GRACE_S
from stampede.steps.cleanup import cleanup_test_data
from stampede.steps.preflight import RunRequest, preflight
from stampede.steps.provision import provision_workers
from stampede.steps.run_stages import load_still_running
from stampede.steps.teardown import teardown_workers
from stampede.steps.validate import validate

pytestmark = pytest.mark.integration

HERE = Path(__file__).parent
POLLING_LOCUSTFILE = HERE / "polling_locustfile.py"
OWNER_PROCESS = HERE / "owner_process.py"


@pytest.fixture
def kill_file(tmp_path, monkeypatch):
    path = tmp_path / "KILL_SWITCH"
    monkeypatch.setenv("STAMPEDE_KILL_SWITCH_FILE", str(path))  # the owner, master and workers inherit it
    monkeypatch.delenv("STAMPEDE_KILL_SWITCH", raising=False)
    return path


def _scenario(tmp_path: Path, stages: list[tuple[str, int]], *, grace_s: float | None = None) -> str:
    data = {"name": "owned", "journeys": {"PollingUser": 1}, "think_time_s": [0.05, 0.15],
            "locustfile": str(POLLING_LOCUSTFILE), "cleanup": "none",  # it only reads
            "stages": [{"name": name, "users": 4, "spawn_rate": 4, "duration_s": s} for name, s in stages]}
    if grace_s is not None:
        data["owner_grace_s"] = grace_s
    path = tmp_path / "owned.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _wait_for(condition, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _load_times(canary: Canary) -> list[float]:
    """When each load request arrived (the journeys poll /escrows; health probes and metrics scrapes are not load)."""
    with canary._lock:
        return sorted(h.t for h in canary.requests if h.path.endswith("/escrows"))


def _load_hits(canary: Canary) -> int:
    return len(_load_times(canary))


def _quiet_after(canary: Canary, killed_at: float, *, quiet_s: float, limit_s: float) -> float:
    """Seconds after ``killed_at`` of the last load request, once ``quiet_s`` passed without one (or ``limit_s``)."""
    def last() -> float:
        times = _load_times(canary)
        return times[-1] if times else killed_at

    while time.time() - killed_at < limit_s:
        if time.time() - max(last(), killed_at) > quiet_s:
            break
        time.sleep(0.2)
    return last() - killed_at


def _alive(processes: list[psutil.Process]) -> list[str]:
    left = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(process.cmdline())[:120])
        except psutil.NoSuchProcess:
            continue
    return left


def _run_processes(run_dir: Path) -> list[psutil.Process]:
    """The master, the agents and their Locust workers of the run in ``run_dir`` (by their command lines)."""
    found, ports = [], set()
    workers = run_dir / "workers.json"
    if workers.exists():
        ports.add(str(json.loads(workers.read_text())["master_port"]))
    for process in psutil.process_iter(["cmdline"]):
        line = " ".join(process.info["cmdline"] or [])
        if str(run_dir) in line or any(f"--master-port {port}" in line for port in ports):
            if process.pid != os.getpid():
                found.append(process)
    return found


def _start_owner(plan, tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan.to_dict()))
    log_path = tmp_path / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, str(OWNER_PROCESS), str(plan_path), "--handover"],
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    return process, log_path


def _plan(tmp_path, canary, stages, *, run_id, grace_s=None, workers=1):
    return preflight(RunRequest(scenarios=[_scenario(tmp_path, stages, grace_s=grace_s)], target=canary.base_url,
                                run_id=run_id, workers=workers, out_dir=str(tmp_path / "run")))


def _start_cli(tmp_path: Path, canary: Canary, out: Path, run_id: str, **popen) -> subprocess.Popen:
    """``stampede run`` with one local worker for 60 s, in a session of its own (signals reach it alone)."""
    return subprocess.Popen(
        [sys.executable, "-m", "stampede.surfaces.cli", "run", "--target", canary.base_url,
         "--scenario", _scenario(tmp_path, [("hold", 60)]), "--workers", "1", "--out", str(out),
         "--run-id", f"{run_id}-{os.getpid()}"], start_new_session=True, **popen)


def test_sigkilled_cli_takes_its_load_down_at_once(tmp_path, kill_file, record_property):
    with Canary() as canary:
        out = tmp_path / "run"
        cli = _start_cli(tmp_path, canary, out, "cli-killed", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_for(lambda: _load_hits(canary) >= 30, 90, "load from the CLI")
            children = psutil.Process(cli.pid).children(recursive=True)
            killed_at = time.time()
            os.kill(cli.pid, signal.SIGKILL)
            cli.wait(10)
            latency = _quiet_after(canary, killed_at, quiet_s=3.0, limit_s=30)
            time.sleep(1.0)
            left = _alive(children) + _alive(_run_processes(out))
        finally:
            for process in _run_processes(out):
                process.kill()
    record_property("cli_sigkill_last_request_s", round(latency, 2))
    print(f"CLI SIGKILLed: last request {latency:.2f} s after; {len(children)} children, left {left}")
    assert len(children) >= 3  # master, agent, its Locust worker
    assert latency < 3.0
    assert left == []
    assert (out / "logs" / "master.log").stat().st_size > 0  # the master writes it itself, line by line


def test_sigterm_to_the_cli_stops_the_load_at_once_then_cleans_up_and_tears_down(tmp_path, kill_file):
    with Canary() as canary:
        out = tmp_path / "run"
        cli = _start_cli(tmp_path, canary, out, "cli-terminated", stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
        try:
            _wait_for(lambda: _load_hits(canary) >= 30, 90, "load from the CLI")
            children = psutil.Process(cli.pid).children(recursive=True)
            stopped_at = time.time()
            os.kill(cli.pid, signal.SIGTERM)
            _, stderr = cli.communicate(timeout=90)
            latency = _quiet_after(canary, stopped_at, quiet_s=2.0, limit_s=20)
            left = _alive(children)
        finally:
            for process in _run_processes(out):
                process.kill()
    print(f"CLI SIGTERMed: last request {latency:.2f} s after; exit {cli.returncode}")
    assert latency < 2.0
    assert cli.returncode == 3, stderr[-2000:]  # INVALID: the figures end early for a reason of our own
    assert "stopped by SIGTERM" in stderr
    assert json.loads((out / "teardown.json").read_text())["left"] == 0 and (out / "cleanup.json").exists()
    output = json.loads((out / "locust_output.json").read_text())
    assert output["stopped"]["kind"] == "stopped" and "SIGTERM" in output["stopped"]["reason"]
    assert left == []


def test_no_takeover_the_load_stops_after_the_grace_and_the_run_is_invalid(tmp_path, kill_file, record_property):
    with Canary() as canary:
        plan = _plan(tmp_path, canary, [("hold", 60)], run_id=f"orphaned-{os.getpid()}")
        assert plan.owner_grace_s == DEFAULT_OWNER_GRACE_S
        provision_workers(plan)  # another process, as Airflow's provisioning task
        run_dir = tmp_path / "run"
        try:
            process, _ = _start_owner(plan, tmp_path, "owner")
            _wait_for(lambda: _load_hits(canary) >= 30, 90, "load from the owner")
            assert load_still_running(plan) is not None  # cleanup would wait now
            killed_at = time.time()
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            latency = _quiet_after(canary, killed_at, quiet_s=3.0, limit_s=40)
            _wait_for(lambda: not _alive([p for p in _run_processes(run_dir)]), 20, "the run's processes to end")
            hits_after = _load_hits(canary)

            # a new try comes too late: it takes the output of the master that stopped itself, sends nothing
            retry, retry_log = _start_owner(plan, tmp_path, "retry")
            assert retry.wait(60) == 0, retry_log.read_text()[-2000:]
            assert _load_hits(canary) == hits_after
            result = validate(plan)
            assert load_still_running(plan) is None
            cleaned = cleanup_test_data(plan)
        finally:
            torn = teardown_workers(plan)
    record_property("orphaned_load_last_request_s", round(latency, 2))
    print(f"owner SIGKILLed, nobody took over: last request {latency:.2f} s after (grace {plan.owner_grace_s:g} s)")
    assert latency - plan.owner_grace_s < 5.0
    assert latency > plan.owner_grace_s - 1.0  # the beat, not a parent-death signal, ended it: the handover window
    assert result.verdict == "invalid" and result.stopped.kind == "owner_lost"
    assert "nobody took the run over" in result.stopped.reason
    assert "LOADRAN" in retry_log.read_text() and "has ended; taking its output" in retry_log.read_text()
    assert cleaned.ok and torn.left == 0
    assert (run_dir / "logs" / "master.log").stat().st_size > 0


def _takeover_times(run_dir: Path, second: subprocess.Popen, log: Path, started: float) -> tuple[float, float]:
    """Seconds from a new owner's start to its first beat, and to its "took over" (its supervision)."""
    first_beat_s = took_over_s = None
    while (first_beat_s is None or took_over_s is None) and second.poll() is None and time.time() - started < 60:
        beat = owner.read_beat(run_dir / owner.OWNER_FILE)
        if first_beat_s is None and beat is not None and beat.owner.endswith(f":{second.pid}"):
            first_beat_s = time.time() - started
        if took_over_s is None and "Took over the running Locust master" in log.read_text():
            took_over_s = time.time() - started
        time.sleep(0.02)
    assert first_beat_s is not None and took_over_s is not None, log.read_text()[-3000:]
    return first_beat_s, took_over_s


def test_a_new_owner_within_the_grace_takes_the_run_over(tmp_path, kill_file, record_property):
    with Canary() as canary:
        plan = _plan(tmp_path, canary, [("first", 10), ("second", 12)], run_id=f"handed-over-{os.getpid()}",
                     grace_s=15)
        provision_workers(plan)
        run_dir = tmp_path / "run"
        try:
            first, _ = _start_owner(plan, tmp_path, "first-owner")
            _wait_for(lambda: _load_hits(canary) >= 30, 90, "load from the first owner")
            checkpoint = owner.read_checkpoint(run_dir / owner.CHECKPOINT_FILE)
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            time.sleep(3.0)  # dead, and load still flows: within the grace
            started = time.time()
            second, second_log = _start_owner(plan, tmp_path, "second-owner")
            first_beat_s, took_over_s = _takeover_times(run_dir, second, second_log, started)
            assert second.wait(90) == 0, second_log.read_text()[-3000:]
            ran = json.loads(second_log.read_text().split("LOADRAN ", 1)[1].splitlines()[0])
            result = validate(plan)
            times = _load_times(canary)
        finally:
            teardown_workers(plan)
    gaps = max(b - a for a, b in zip(times, times[1:]))
    span = times[-1] - times[0]
    record_property("takeover_largest_gap_s", round(gaps, 2))
    record_property("takeover_first_beat_s", round(first_beat_s, 2))
    print(f"taken over: load span {span:.1f} s for 22 s planned, largest gap {gaps:.2f} s; {len(times)} requests; "
          f"the new owner beat {first_beat_s:.2f} s after it started, and took the master over {took_over_s:.2f} s")
    assert first_beat_s < took_over_s  # it beats first, before the load step's warm-up
    assert "Took over the running Locust master" in second_log.read_text()
    assert owner.read_checkpoint(run_dir / owner.CHECKPOINT_FILE) == checkpoint  # the same master all along
    assert ran["stopped"] is None
    assert gaps < 2.0  # no pause, no restart
    assert 20.0 < span < 27.0  # played once: a restart would have added the stages again
    assert [s.name for s in result.stages] == ["first", "second"]
    assert result.stopped is None and result.verdict != "invalid"
    assert sum(s.requests for s in result.stages) >= 0.9 * len(times)  # the figures kept counting through it


def test_the_kill_switch_stops_load_whose_owner_died(tmp_path, kill_file, record_property):
    with Canary() as canary:
        plan = _plan(tmp_path, canary, [("hold", 60)], run_id=f"switched-{os.getpid()}", grace_s=60)
        provision_workers(plan)
        try:
            process, _ = _start_owner(plan, tmp_path, "owner")
            _wait_for(lambda: _load_hits(canary) >= 30, 90, "load from the owner")
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            before = _load_hits(canary)
            time.sleep(3.0)
            assert _load_hits(canary) > before  # within its grace: nobody stopped it yet
            kill_file.write_text("operator: stop everything")
            flipped_at = time.time()
            latency = _quiet_after(canary, flipped_at, quiet_s=3.0, limit_s=30)
            _wait_for(lambda: (tmp_path / "run" / "locust_output.json").exists(), 30, "the master's output")
            output = json.loads((tmp_path / "run" / "locust_output.json").read_text())
        finally:
            kill_file.unlink(missing_ok=True)
            teardown_workers(plan)
    record_property("kill_switch_without_owner_s", round(latency, 2))
    print(f"kill switch with the owner dead: last request {latency:.2f} s after the flip")
    assert latency < 3.0
    assert output["stopped"]["kind"] == "kill_switch" and "stop everything" in output["stopped"]["reason"]
