"""Run the demo target as a child process: for tests, the CLI demo and the Makefile.

A separate process (not a thread) because the target must compete with the load
generator for CPU the way a real staging system would not share one Python
interpreter with it, and because uvicorn owns signal handling in its process.

In code::

    with DemoTarget(pool_size=4) as target:
        httpx.get(target.base_url + "/health")

From a Makefile (detached; the state file remembers the pid and URL)::

    python -m stampede.infra.demo_target.server start --state-file .demo.json
    python -m stampede.infra.demo_target.server stop --state-file .demo.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import httpx

# The same names as in app.py, repeated so this module stays cheap to import (no FastAPI, no SQLAlchemy).
PASSWORD_ENV = "STAMPEDE_DEMO_PASSWORD"
DEFAULT_PASSWORD = "LoadTest123!"  # demo only
STARTUP_TIMEOUT_S = 60.0  # generous: cold imports take ~4-9 s on a busy 2-core machine
STOP_TIMEOUT_S = 5.0
_WORKDIR_PREFIX = "stampede-demo-"
_MODULE = "stampede.infra.demo_target"


class DemoTargetError(RuntimeError):
    """The demo target did not come up healthy (the message carries its log's tail)."""


class DemoTarget:
    """The demo target in a child process on a free loopback port, healthy once started.

    :param pool_size: database connections (the pool never grows beyond it).
    :param pool_timeout_s: how long a request waits for a connection before a 503.
    :param extra_latency_ms: ``{"GET /v1/listings": 50}``: slow these routes on purpose.
    :param password: the demo accounts' password; default ``STAMPEDE_DEMO_PASSWORD`` or the demo default.
    :param db_path: SQLite file to use; default a fresh ``demo.db`` in the work directory.
    :param workdir: where the port file, log and database go; default a temporary directory,
        removed on ``stop`` (a directory you pass is yours: it is left in place).
    :param startup_timeout_s: give up (and stop the child) when not healthy by then.
    :param detach: start in its own session and outlive this process (``stop`` still works).
    """

    def __init__(
        self,
        *,
        pool_size: int = 8,
        pool_timeout_s: float = 5.0,
        extra_latency_ms: Mapping[str, float] | None = None,
        password: str | None = None,
        db_path: str | os.PathLike[str] | None = None,
        workdir: str | os.PathLike[str] | None = None,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
        detach: bool = False,
    ) -> None:
        self.pool_size = pool_size
        self.pool_timeout_s = pool_timeout_s
        self.extra_latency_ms = dict(extra_latency_ms or {})
        self.password = password or os.environ.get(PASSWORD_ENV) or DEFAULT_PASSWORD
        self.db_path = Path(db_path) if db_path else None
        self.startup_timeout_s = startup_timeout_s
        self.detach = detach
        self.workdir: Path | None = Path(workdir) if workdir else None
        self._owns_workdir = workdir is None
        self._process: subprocess.Popen[bytes] | None = None
        self._port: int | None = None

    # -- what a client needs --------------------------------------------------
    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        return f"{self._origin}/v1"

    @property
    def metrics_url(self) -> str:
        return f"{self._origin}/metrics"

    @property
    def pid(self) -> int:
        if self._process is None:
            raise DemoTargetError("the demo target is not running")
        return self._process.pid

    @property
    def log_path(self) -> Path:
        """The child's stdout and stderr (warnings and tracebacks end up here)."""
        if self.workdir is None:
            raise DemoTargetError("the demo target was never started")
        return self.workdir / "server.log"

    @property
    def _origin(self) -> str:
        if self._port is None:
            raise DemoTargetError("the demo target is not running")
        return f"http://127.0.0.1:{self._port}"

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> Self:
        """Start the child and return once ``/v1/health`` answers 200; :class:`DemoTargetError` otherwise."""
        if self._process is not None:
            return self
        if self._owns_workdir:
            self.workdir = Path(tempfile.mkdtemp(prefix=_WORKDIR_PREFIX))
        assert self.workdir is not None
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.workdir / "port"
        port_file.unlink(missing_ok=True)  # a reused workdir must not hand us an old port
        command = [
            sys.executable, "-m", _MODULE, "--host", "127.0.0.1", "--port", "0",
            "--db", str(self.db_path or self.workdir / "demo.db"), "--port-file", str(port_file),
            "--pool-size", str(self.pool_size), "--pool-timeout", str(self.pool_timeout_s),
        ]
        for route, ms in self.extra_latency_ms.items():
            command += ["--slow", f"{route}={ms}"]
        if not self.detach:
            command += ["--exit-with-parent", str(os.getpid())]
        env = {**os.environ, PASSWORD_ENV: self.password, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "wb") as log:
            self._process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=self.detach,
            )
        try:
            self._wait_until_healthy(port_file)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_healthy(self, port_file: Path) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        assert self._process is not None
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    raise DemoTargetError(f"demo target exited with {self._process.returncode}: {self._log_tail()}")
                if self._port is None and port_file.exists():
                    self._port = int(port_file.read_text())
                if self._port is not None:
                    try:
                        if client.get(self.base_url + "/health").status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                time.sleep(0.05)
        raise DemoTargetError(f"demo target not healthy within {self.startup_timeout_s:.0f} s: {self._log_tail()}")

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:]) or "(empty log)"
        except OSError:
            return "(no log)"

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``; remove the temporary directory. Idempotent."""
        process, self._process, self._port = self._process, None, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout_s)
        if self.workdir is not None and self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- detached, for the Makefile --------------------------------------------------
def start_detached(state_file: Path, **options: Any) -> dict[str, Any]:
    """Start a detached demo target and record it in ``state_file``; reuse a live one already recorded."""
    state = _read_state(state_file)
    if state and _is_demo_target(state["pid"]):
        return state
    target = DemoTarget(detach=True, **options).start()
    state = {
        "pid": target.pid, "base_url": target.base_url, "metrics_url": target.metrics_url,
        "workdir": str(target.workdir), "owns_workdir": target._owns_workdir,
    }
    target._process = None  # the object goes away here; the process must not
    tmp = state_file.with_name(f".{state_file.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, state_file)
    return state


def stop_detached(state_file: Path, timeout_s: float = STOP_TIMEOUT_S) -> bool:
    """Stop the demo target recorded in ``state_file``; ``False`` when there was none. Idempotent."""
    state = _read_state(state_file)
    if state is None:
        return False
    pid = int(state["pid"])
    if _is_demo_target(pid):  # never signal a pid that was reused by another program
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while _is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _is_alive(pid):
            os.kill(pid, signal.SIGKILL)
    workdir = Path(state.get("workdir") or "")
    if state.get("owns_workdir") and workdir.name.startswith(_WORKDIR_PREFIX):
        shutil.rmtree(workdir, ignore_errors=True)
    state_file.unlink(missing_ok=True)
    return True


def _read_state(state_file: Path) -> dict[str, Any] | None:
    try:
        return json.loads(state_file.read_text())
    except FileNotFoundError:
        return None


def _is_alive(pid: int) -> bool:
    """Running, not merely a zombie (a detached target started by this very process is our child)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_demo_target(pid: int) -> bool:
    """Alive and running ``-m stampede.infra.demo_target`` (Linux: read from /proc; elsewhere: alive is enough)."""
    if not _is_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return not Path("/proc/self").exists()
    except OSError:
        return False
    return _MODULE.encode() in cmdline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stampede.infra.demo_target.server", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("start", help="start detached; return once healthy")
    start.add_argument("--state-file", type=Path, required=True)
    start.add_argument("--pool-size", type=int, default=8)
    start.add_argument("--pool-timeout", type=float, default=5.0)
    start.add_argument("--db", type=Path, help="SQLite file (default: a fresh temporary one)")
    start.add_argument("--slow", action="append", default=[], metavar="'METHOD /route=MS'")
    stop = sub.add_parser("stop", help="stop the target recorded in the state file")
    stop.add_argument("--state-file", type=Path, required=True)
    args = parser.parse_args(argv)

    if args.command == "stop":
        stopped = stop_detached(args.state_file)
        print("demo target stopped" if stopped else "no demo target recorded")
        return 0
    slow = {}
    for spec in args.slow:
        route, _, ms = spec.rpartition("=")
        slow[route.strip()] = float(ms)
    try:
        state = start_detached(
            args.state_file, pool_size=args.pool_size, pool_timeout_s=args.pool_timeout, db_path=args.db,
            extra_latency_ms=slow,
        )
    except DemoTargetError as exc:
        print(f"demo target: {exc}", file=sys.stderr)
        return 1
    print(f"demo target listening on {state['base_url']} (pid {state['pid']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
