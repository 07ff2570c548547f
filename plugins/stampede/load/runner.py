"""Run the Locust master as a subprocess and supervise it until the stages end.

Locust must live in its own process (its gevent monkey-patching crashes a
process that imported Airflow). This module starts the master, relays its
progress lines to the log, samples the load generators' CPU and memory from
outside Locust, turns the kill switch into a stop file the master polls, and
enforces a hard wall-clock limit so a run always ends by itself.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from stampede.core.stops import StopKind, StopProbe, never
from stampede.plan.run_plan import RunPlan
from stampede.core.records import GeneratorSample
from stampede.load.process_env import plan_process_env
from stampede.load.stage_health import StageHealthWatch
from stampede.core.paths import Artifact, data_dir

log = logging.getLogger(__name__)

PLUGIN_FILE = Path(__file__).resolve().parent / "entry.py"
STOCK_LOCUSTFILE = data_dir("loadtests") / "locustfile.py"
STOCK_JOURNEYS = {"agent": "AgentUser", "broker": "BrokerUser", "admin": "AdminUser", "readonly": "ReadonlyUser"}
EXPECT_WORKERS_WAIT_S = 60
GRACE_S = 90  # beyond the planned load time: spawn, worker wait, shutdown


class WorkersDidNotRegister(RuntimeError):
    """The master gave up waiting for the provisioned workers; teardown still runs."""


@dataclass
class LocustRun:
    """What a master run left behind: its output file, exit code and generator samples."""

    output_path: Path
    exit_code: int
    samples: list[GeneratorSample] = field(default_factory=list)
    killed_by_timeout: bool = False
    log_path: Path | None = None

    def output(self) -> dict:
        if not self.output_path.exists():
            log_text = self.log_path.read_text() if self.log_path and self.log_path.exists() else ""
            if "Gave up waiting for workers to connect" in log_text:
                raise WorkersDidNotRegister(
                    f"workers: not all workers registered with the master within {EXPECT_WORKERS_WAIT_S} s; "
                    "fix: check that the workers can reach the master's address and port (see the worker logs)"
                )
            raise RuntimeError(
                f"Locust wrote no results (exit code {self.exit_code}); see {self.log_path} for why"
            )
        return json.loads(self.output_path.read_text())


def locustfiles_for(plan: RunPlan) -> str:
    return f"{PLUGIN_FILE},{plan.locustfile or STOCK_LOCUSTFILE}"


def user_classes_for(plan: RunPlan) -> list[str]:
    """The User class names to run: the scenario's journeys with a positive weight."""
    names = []
    for key, weight in plan.journeys().items():
        if weight <= 0:
            continue
        names.append(STOCK_JOURNEYS.get(key, key) if plan.locustfile is None else key)
    return names


def run_master(
    plan: RunPlan,
    run_dir: Path,
    *,
    master_port: int | None,
    expect_workers: int,
    worker_processes: Callable[[], list[psutil.Process]] = list,
    stop_probe: StopProbe = never,
    on_line: Callable[[str], None] | None = None,
    stage_health: Callable[[], str | None] | None = None,
    master_bind_host: str = "127.0.0.1",
) -> LocustRun:
    """Start the master (or a standalone process when ``expect_workers`` is 0) and wait for it.

    :param stop_probe: polled twice a second; a :class:`stampede.core.stops.StopRequest` stops the load
        (the kill switch, the allowed hours: the request carries its kind).
    :param stage_health: probes the target as each stage after the first starts; a reason
        stops the run with kind ``target_unhealthy``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    output_path = run_dir / "locust_output.json"
    output_path.unlink(missing_ok=True)
    stop_file = run_dir / "STOP"
    stop_file.unlink(missing_ok=True)
    log_path = run_dir / "logs" / "master.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)

    command = [
        sys.executable, "-m", "locust", "-f", locustfiles_for(plan), "--headless",
        "--host", plan.target,
        "--stampede-plan", json.dumps(plan.locust_plan()),
        "--stampede-out", str(output_path),
        "--stampede-stop-file", str(stop_file),
        "--stampede-ledger", str(run_dir / Artifact.LEDGER),  # what the run creates, on disk as it goes
        "--only-summary", "--exit-code-on-error", "0",  # the plugin sets a graceful --stop-timeout
    ]
    if expect_workers > 0:
        command += [
            "--master", "--master-bind-host", master_bind_host, "--master-bind-port", str(master_port),
            "--expect-workers", str(expect_workers), "--expect-workers-max-wait", str(EXPECT_WORKERS_WAIT_S),
        ]
    command += user_classes_for(plan)
    wall_limit_s = plan.load_duration_s + GRACE_S + (EXPECT_WORKERS_WAIT_S if expect_workers else 0)

    # allow-listed: team locustfiles run in this process, so never the task's cloud, Airflow or Slack
    # credentials; the run tag, the password variable the plan names and the egress policy are in it
    env = plan_process_env(plan)
    started = time.time()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, text=True, bufsize=1, start_new_session=True,
    )
    watch = StageHealthWatch(stage_health) if stage_health else None

    def relay_line(line: str) -> None:
        if watch is not None:
            watch.on_line(line)
        (on_line or log.info)(line)

    relay = threading.Thread(target=_relay, args=(process, log_path, relay_line), daemon=True)
    relay.start()

    run = LocustRun(output_path=output_path, exit_code=-1, log_path=log_path)
    sampler = _Sampler(process.pid, worker_processes)
    stop_written = False
    try:
        while process.poll() is None:
            time.sleep(0.5)
            run.samples.extend(sampler.sample())
            if not stop_written:
                request = stop_probe()
                if request is not None:
                    stop_file.write_text(json.dumps(request.to_dict()))
                    stop_written = True
                    log.warning("Stop requested: %s (the master stops the load within seconds)", request.reason)
                elif watch is not None and watch.problem:
                    stop_file.write_text(json.dumps({"reason": watch.problem, "kind": StopKind.TARGET_UNHEALTHY}))
                    stop_written = True
                    log.error("Stopping the run: %s", watch.problem)
            if time.time() - started > wall_limit_s:
                log.error("Locust master exceeded its wall-clock limit of %.0f s; terminating it", wall_limit_s)
                run.killed_by_timeout = True
                _terminate(process)
                break
    finally:
        if process.poll() is None:
            _terminate(process)
        relay.join(timeout=5)
    run.exit_code = process.returncode if process.returncode is not None else -1
    return run


def _relay(process: subprocess.Popen, log_path: Path, on_line: Callable[[str], None] | None) -> None:
    with open(log_path, "a") as log_file:
        for line in process.stdout:  # type: ignore[union-attr]
            log_file.write(line)
            line = line.rstrip()
            if line.startswith("[stampede]") or "WARNING" in line or "ERROR" in line:
                (on_line or log.info)(line)


def _terminate(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=5)


class _Sampler:
    """Samples CPU (% of one core) and memory of the master and worker processes, once a second."""

    def __init__(self, master_pid: int, worker_processes: Callable[[], list[psutil.Process]]) -> None:
        self.master_pid = master_pid
        self.worker_processes = worker_processes
        self.known: dict[int, psutil.Process] = {}
        self.waited: dict[int, tuple[float, float]] = {}  # pid -> (time, run-queue wait in s) at the last sample
        self.last = 0.0

    def sample(self) -> list[GeneratorSample]:
        now = time.time()
        if now - self.last < 1.0:
            return []
        self.last = now
        processes = []
        try:
            processes.append(("master", psutil.Process(self.master_pid)))
        except psutil.NoSuchProcess:
            pass
        processes += [("worker", p) for p in self.worker_processes()]
        samples = []
        for role, process in processes:
            tracked = self.known.get(process.pid)
            if tracked is None:
                self.known[process.pid] = process
                process.cpu_percent(None)  # first call primes the counter
                self.waited[process.pid] = (now, run_queue_wait_s(process.pid))
                continue
            try:
                waited, previous = run_queue_wait_s(process.pid), self.waited.get(process.pid, (now, 0.0))
                self.waited[process.pid] = (now, waited)
                samples.append(GeneratorSample(
                    t=now, role=role, pid=process.pid, cpu_pct=tracked.cpu_percent(None),
                    rss_mib=tracked.memory_info().rss / 2**20,
                    wait_pct=round(100.0 * max(0.0, waited - previous[1]) / max(now - previous[0], 1e-3), 1),
                ))
            except psutil.NoSuchProcess:
                self.known.pop(process.pid, None)
        return samples


def run_queue_wait_s(pid: int) -> float:
    """Seconds the process's threads spent runnable but waiting for a core (Linux schedstat; 0 elsewhere).

    CPU use alone misses a starved generator: a process that shares its core with
    another gets about half of it and shows ~50 % CPU while it is late all the time.
    Running plus waiting to run is what it *wanted*; that is what saturation means.
    """
    total_ns = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as handle:
                    total_ns += int(handle.read().split()[1])
            except (OSError, IndexError, ValueError):
                continue
    except OSError:
        return 0.0
    return total_ns / 1e9
