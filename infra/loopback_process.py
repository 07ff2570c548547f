"""Small servers for tests and benchmarks: bind a free loopback port, and run one in a subprocess.

A server module binds with ``bind_free_loopback(port_file)`` (the kernel picks
the port; the file is written atomically so a reader never sees half of it).
``LoopbackProcess`` starts ``python -m <module> --port-file F --exit-with-parent PID …``
and waits for that file: the one pattern the fixed-latency and fast CRM targets share.
Every server calls ``exit_when_orphaned``, so a test run killed with SIGKILL (or a
timeout) leaves no server behind: the next run would otherwise share its cores.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def bind_free_loopback(port_file: str | os.PathLike[str]) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    tmp = f"{port_file}.tmp"
    Path(tmp).write_text(str(sock.getsockname()[1]))
    os.replace(tmp, port_file)
    return sock


def add_exit_with_parent(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exit-with-parent", type=int, metavar="PID", help="stop when process PID is gone")


def exit_when_orphaned(parent_pid: int | None) -> None:
    """SIGTERM ourselves once ``parent_pid`` is gone (checked every second); ``None`` watches nothing."""
    if not parent_pid:
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


class LoopbackProcess:
    """``python -m module --port-file F *args`` in a subprocess; ``root_url`` once it listens (context manager)."""

    def __init__(self, module: str, args: list[str], *, workdir: Path, startup_timeout_s: float = 30,
                 command: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.module = module
        self.args = args
        self.command = command or [sys.executable, "-m", module]  # or a server that is not Python (json-server)
        self.env = env
        self.port_file = Path(workdir) / f"{module.rsplit('.', 1)[-1]}-{time.time_ns()}.port"
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen | None = None
        self.root_url = ""

    def start(self) -> str:
        self.process = subprocess.Popen(
            [*self.command, "--port-file", str(self.port_file), "--exit-with-parent", str(os.getpid()), *self.args],
            cwd=Path(__file__).resolve().parents[1], stdin=subprocess.DEVNULL, env=self.env,
        )
        deadline = time.time() + self.startup_timeout_s
        while not self.port_file.exists():
            if time.time() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"{self.module} did not start")
            time.sleep(0.05)
        self.root_url = f"http://127.0.0.1:{self.port_file.read_text()}"
        return self.root_url

    @property
    def pid(self) -> int:
        return self.process.pid if self.process else 0

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
