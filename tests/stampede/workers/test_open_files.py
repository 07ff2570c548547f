"""One socket per user: a local load process is planned under this machine's open-file hard limit.

Past the limit every request of the users beyond it fails with ``[Errno 24] Too many open
files``: a 40,000-user bench level on 2 workers under a 20,000-file limit lost 0.04 % of
its requests that way. The unit half computes the plan under a lowered limit (in a child
process: a hard limit cannot be raised again); the real half runs ``stampede run`` under a
700-file limit against a target that counts connections: 1,200 users on one worker are
refused before the first request, and without ``--workers`` the run gets the three workers
its users need and every request succeeds.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from stampede.core.netutil import FILES_BEFORE_USERS, free_port

LIMIT = 700  # the hard open-file limit the tests' processes get: 500 users per load process


def _limited(limit: int = LIMIT):
    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return set_limit


PLAN_UNDER_LIMIT = """
import json
from stampede.core.errors import Refusal
from stampede.core.netutil import users_per_process
from stampede.workers.local import check_open_files, default_worker_count

def refusal(users, workers):
    try:
        check_open_files(users, workers)
    except Refusal as exc:
        return str(exc)
    return None

print(json.dumps({
    "per_process": users_per_process(),
    "workers_for": {n: default_worker_count(n) for n in (1, 400, 1000, 1001, 2500)},
    "refusals": {f"{u}/{w}": refusal(u, w) for u, w in ((500, 0), (501, 0), (1000, 2), (1001, 2), (2500, 5))},
}))
"""


def test_workers_are_planned_under_the_open_file_limit():
    done = subprocess.run([sys.executable, "-c", PLAN_UNDER_LIMIT], capture_output=True, text=True, timeout=60,
                          preexec_fn=_limited(), check=True)
    plan = json.loads(done.stdout)
    assert plan["per_process"] == LIMIT - FILES_BEFORE_USERS == 500
    # one per core (this machine's count) for few users, more when the sockets need them
    cores = psutil.cpu_count() or 1
    assert plan["workers_for"]["1"] == 1
    assert plan["workers_for"]["1000"] == max(min(cores, 5), 2)
    assert plan["workers_for"]["1001"] == max(min(cores, 6), 3)
    assert plan["workers_for"]["2500"] == max(min(cores, 13), 5)
    refusals = plan["refusals"]
    assert refusals["500/0"] is None and refusals["1000/2"] is None and refusals["2500/5"] is None
    assert refusals["501/0"] == (
        "workers: 501 users put 501 sockets in one process, past the 500 this machine's open-file hard limit "
        "leaves a load process (ulimit -Hn); fix: workers 2 or more, or raise the hard limit "
        "(LimitNOFILE, /etc/security/limits.conf)")
    assert refusals["1001/2"].startswith("workers: 1,001 users put 501 sockets in each of 2 local workers, past the 500")
    assert "fix: workers 3 or more" in refusals["1001/2"]


LOCUSTFILE = """
from locust import FastHttpUser, task


class PingUser(FastHttpUser):
    @task
    def ping(self):
        self.client.get("/ping")
"""


@pytest.fixture
def counting_target(tmp_path, start_counting_target):
    port, counts = free_port(), tmp_path / "peers.json"
    with start_counting_target(port, counts, preexec_fn=_limited(8192)):
        yield port, counts


def _connections(counts: Path) -> int:
    return sum(json.loads(counts.read_text()).values())


@pytest.mark.integration
def test_more_users_than_one_worker_may_hold_are_refused_or_spread(counting_target, tmp_path):
    port, counts = counting_target
    (tmp_path / "ping.py").write_text(LOCUSTFILE)
    scenario = tmp_path / "ping.yaml"
    scenario.write_text(textwrap.dedent("""
        name: ping
        locustfile: ping.py
        journeys: {PingUser: 1}
        think_time_s: [2.0, 3.0]
        stages:
          - {name: hold, users: 1200, spawn_rate: 600, duration_s: 10}
        cleanup: none
    """))
    base = [sys.executable, "-m", "stampede.surfaces.cli", "run", "--target", f"http://127.0.0.1:{port}/v1",
            "--scenario", str(scenario)]

    for workers, where in (("1", "each of 1 local workers"), ("0", "one process")):
        refused = subprocess.run([*base, "--workers", workers, "--out", str(tmp_path / f"refused{workers}")],
                                 capture_output=True, text=True, timeout=120, preexec_fn=_limited())
        assert refused.returncode == 2, refused.stderr[-2000:]
        (line,) = [l for l in refused.stderr.splitlines() if l.startswith("stampede: refused:")]
        assert f"workers: 1,200 users put 1,200 sockets in {where}, past the 500" in line, line
        assert "fix: workers 3 or more" in line, line
        assert _connections(counts) == 0, "a refused run connected to the target"

    log = (tmp_path / "run.log").open("w")  # a file, not a pipe nobody reads while the run goes
    run = subprocess.Popen([*base, "--out", str(tmp_path / "out")], stdout=log, stderr=subprocess.STDOUT,
                           preexec_fn=_limited())
    peak_files: dict[int, int] = {}
    deadline = time.monotonic() + 240
    while run.poll() is None:  # each worker's open files while the users run (the workers are the CLI's grandchildren)
        assert time.monotonic() < deadline, "the run did not end"
        for child in psutil.Process(run.pid).children(recursive=True):
            try:
                if "worker" in " ".join(child.cmdline()):
                    peak_files[child.pid] = max(peak_files.get(child.pid, 0), child.num_fds())
            except psutil.Error:
                pass
        time.sleep(0.5)
    log.close()
    assert run.returncode == 0, (tmp_path / "run.log").read_text()[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    (stage,) = results["stages"]
    assert results["workers"] == 3, results["workers"]
    assert stage["requests"] > 1200 and stage["failures"] == 0, stage
    assert _connections(counts) >= 1200
    busiest = max(peak_files.values(), default=0)
    print(f"workers' peak open files: {sorted(peak_files.values())} (limit {LIMIT}); stage {stage['requests']} "
          f"requests, {stage['failures']} failed, {_connections(counts)} connections")
    assert 400 < busiest < LIMIT, peak_files  # each held its 400 users' sockets, under the limit
