"""A worker agent: keeps one ``locust --worker`` connected to the run's master until it expires.

A Locust worker exits when its master quits; the nightly run may start a
master more than once (a retried task), so the agent starts a fresh worker
each time, until the time-to-live passes or its stop file appears. Cloud
workers run the same agent as their container command.

    python -m stampede.workers.agent --master-host H --master-port P \
        --locustfiles F1,F2 --expires-at EPOCH [--stop-file PATH]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from stampede.core.netutil import raise_open_file_limit

RESTART_PAUSE_S = 1.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stampede-worker-agent")
    parser.add_argument("--master-host", required=True)
    parser.add_argument("--master-port", type=int, required=True)
    parser.add_argument("--locustfiles", required=True)
    parser.add_argument("--expires-at", type=float, required=True)
    parser.add_argument("--stop-file", default="")
    args = parser.parse_args(argv)
    raise_open_file_limit()  # inherited by the Locust worker: one socket per user (Locust asks for 10,000)

    child: subprocess.Popen | None = None

    def stop(_signum, _frame):
        if child is not None and child.poll() is None:
            child.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while time.time() < args.expires_at and not (args.stop_file and os.path.exists(args.stop_file)):
        child = subprocess.Popen([
            sys.executable, "-m", "locust", "--worker", "-f", args.locustfiles,
            "--master-host", args.master_host, "--master-port", str(args.master_port),
            "--loglevel", "WARNING",
        ])
        while child.poll() is None:
            if time.time() >= args.expires_at or (args.stop_file and os.path.exists(args.stop_file)):
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                break
            time.sleep(0.5)
        time.sleep(RESTART_PAUSE_S)
    return 0


if __name__ == "__main__":
    sys.exit(main())
