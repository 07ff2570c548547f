"""Local workers: worker agents as processes on this machine (the default provider)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import psutil

from stampede.core.errors import Refusal
from stampede.core.netutil import free_port, users_per_process
from stampede.load.owner import OWNER_FILE, children_die_with_owner, die_with_parent
from stampede.workers.base import WorkerSet, load_worker_set

log = logging.getLogger(__name__)


def default_worker_count(peak_users: int) -> int:
    """One worker per core, but no more workers than a few hundred users each justify, and as many
    as the users' sockets need under one process's open-file limit."""
    cores = os.cpu_count() or 1
    return max(1, min(cores, -(-peak_users // 200)), -(-peak_users // users_per_process()))


class OpenFilesShort(Refusal):
    """A local load process would hold more users (one socket each) than its open-file limit allows."""


def check_open_files(peak_users: int, workers: int) -> None:
    """Refuse a local plan whose busiest process would pass the open-file hard limit (``workers``: 0 is one
    standalone process); every request of a user past it fails with errno 24."""
    per_process = users_per_process()
    processes = max(1, workers)
    busiest = -(-peak_users // processes)
    if busiest <= per_process:
        return
    need = -(-peak_users // per_process)
    where = "one process" if workers == 0 else f"each of {workers} local workers"
    raise OpenFilesShort(
        "workers", f"{peak_users:,} users put {busiest:,} sockets in {where}, past the {per_process:,} this "
                   "machine's open-file hard limit leaves a load process (ulimit -Hn)",
        f"workers {need} or more, or raise the hard limit (LimitNOFILE, /etc/security/limits.conf)")


class LocalWorkers:
    name = "local"

    def provision(self, *, run_id: str, run_dir: Path, count: int, locustfiles: str, ttl_s: float,
                  env: Mapping[str, str] | None = None) -> WorkerSet:
        """Start ``count`` worker agents.

        :param env: the agents' (and their Locust workers') whole environment: the plan's allow-listed one
            (``stampede.load.process_env.plan_process_env``), since team locustfiles run there; default
            this process's environment (tests and tools that start bare workers).
        """
        existing = load_worker_set(run_dir)
        if existing is not None and existing.provider == self.name:
            if len(self.alive(existing)) == existing.count and existing.locustfiles == locustfiles:
                log.info("Reusing %d live local workers of run %s", existing.count, run_id)
                return existing
            self.teardown(existing)
        now = time.time()
        workers = WorkerSet(
            provider=self.name, run_id=run_id, count=count, master_host="127.0.0.1",
            master_port=free_port(), started_at=now, expires_at=now + ttl_s, locustfiles=locustfiles,
        )
        log_dir = run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        for index in range(count):
            with open(log_dir / f"worker-{index}.log", "ab") as out:
                process = subprocess.Popen(
                    [
                        sys.executable, "-m", "stampede.workers.agent",
                        "--master-host", workers.master_host, "--master-port", str(workers.master_port),
                        "--locustfiles", locustfiles, "--expires-at", str(workers.expires_at),
                        "--stop-file", str(run_dir / "workers.stop"),
                        "--owner-file", str(run_dir / OWNER_FILE),  # ends once the run's owner is gone
                    ],
                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,  # survives the provisioning task; the owner's beat or teardown ends it
                    # the command line owns its workers alone: they die with it at once
                    preexec_fn=die_with_parent() if children_die_with_owner() else None,
                    env=dict(env) if env is not None else worker_env(),
                )
            workers.handles.append(str(process.pid))
        (run_dir / "workers.stop").unlink(missing_ok=True)
        workers.save(run_dir)
        log.info("Started %d local workers for run %s (master port %d)", count, run_id, workers.master_port)
        return workers

    def alive(self, workers: WorkerSet) -> list[str]:
        return [h for h in workers.handles if _is_agent(int(h))]

    def teardown(self, workers: WorkerSet) -> list[str]:
        for handle in self.alive(workers):
            try:
                os.killpg(int(handle), signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.time() + 10
        while self.alive(workers) and time.time() < deadline:
            time.sleep(0.05)  # an agent ends within a tenth of a second of its SIGTERM
        if survivors := self.alive(workers):
            for handle in survivors:
                try:
                    os.killpg(int(handle), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.2)
        for handle in workers.handles:
            _reap(int(handle))
        return self.alive(workers)

    @staticmethod
    def processes(workers: WorkerSet) -> list[psutil.Process]:
        """Every live process of the workers (agents and their Locust children), for sampling."""
        found = []
        for handle in workers.handles:
            try:
                agent = psutil.Process(int(handle))
                found.extend(agent.children(recursive=True))
            except psutil.NoSuchProcess:
                continue
        return found


def worker_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _reap(pid: int) -> None:
    """Collect the exit status of an agent this process started, so it leaves no zombie."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _is_agent(pid: int) -> bool:
    """True when ``pid`` is alive and still one of our agents (pids get reused)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return "stampede.workers.agent" in " ".join(process.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False
