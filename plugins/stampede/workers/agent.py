"""A worker agent: keeps one ``locust --worker`` connected to the run's master until it expires.

A Locust worker exits when its master quits or goes silent; a run may start a
master more than once (a master that died is started again by its owner), so
the agent starts a fresh worker each time, which connects to the same master
host and port, until the time-to-live passes or its stop file appears. Cloud
workers run the same agent as their container command.

It also ends, and starts no other worker, when the run is over for good
(``stampede.load.owner``): its worker exits with ``OWNER_LOST_EXIT`` (the master
said so, or went silent for the run's grace), or, on the owner's host, the run's
heartbeat file (``--owner-file``) is older than its grace (plus ``BACKSTOP_MARGIN_S``). Its Locust worker dies
with it (``PR_SET_PDEATHSIG``): a SIGKILLed agent leaves no worker behind.

    python -m stampede.workers.agent --master-host H --master-port P \
        --locustfiles F1,F2 --expires-at EPOCH [--stop-file PATH] [--owner-file PATH]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from pathlib import Path

from stampede.core.netutil import raise_open_file_limit
from stampede.load.owner import OWNER_LOST_EXIT, die_with_parent, read_beat

RESTART_PAUSE_S = 1.0
# The master stops the run on a stale beat and records why (owner_lost); the agent is the
# backstop for a master that cannot, so it waits a little longer: were it first, the
# master would see its last worker leave and write the run as if it had ended normally.
BACKSTOP_MARGIN_S = 1.5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stampede-worker-agent")
    parser.add_argument("--master-host", required=True)
    parser.add_argument("--master-port", type=int, required=True)
    parser.add_argument("--locustfiles", required=True)
    parser.add_argument("--expires-at", type=float, required=True)
    parser.add_argument("--stop-file", default="")
    parser.add_argument("--owner-file", default="", help="the run's owner heartbeat (stampede.load.owner)")
    args = parser.parse_args(argv)
    raise_open_file_limit()  # inherited by the Locust worker: one socket per user (Locust asks for 10,000)

    child: subprocess.Popen | None = None

    def stop(_signum, _frame):
        if child is not None and child.poll() is None:
            child.terminate()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    owner_file = Path(args.owner_file) if args.owner_file else None

    def over() -> str | None:
        if time.time() >= args.expires_at:
            return "its time to live passed"
        if args.stop_file and os.path.exists(args.stop_file):
            return "its stop file appeared"
        beat = read_beat(owner_file) if owner_file is not None else None
        if beat is not None and not beat.ended and time.time() - beat.beat_at > beat.grace_s + BACKSTOP_MARGIN_S:
            return f"the run's owner ({beat.owner}) stopped beating over {beat.grace_s:g} s ago"
        return None

    while (why := over()) is None:
        child = subprocess.Popen([
            sys.executable, "-m", "locust", "--worker", "-f", args.locustfiles,
            "--master-host", args.master_host, "--master-port", str(args.master_port),
            "--loglevel", "WARNING",
        ], preexec_fn=die_with_parent())
        while child.poll() is None:
            if (why := over()) is not None:
                child.terminate()
                try:
                    child.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    child.kill()
                break
            time.sleep(0.5)
        if child.returncode == OWNER_LOST_EXIT:
            why = "its worker's run is over for good (the owner is gone or stopped it)"
        if why is not None:
            break
        time.sleep(RESTART_PAUSE_S)
    print(f"stampede worker agent: ending: {why}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
