"""The worker's spawn in batches (``stampede.load.fixes.cooperative_spawning``): the batches, and the heartbeat it keeps.

The mechanism test runs a real Locust master and worker (a small locustfile, as
Locust's own tests do): the worker is told to add 2,000 users whose creation takes
2 ms of CPU each, in one spawn message. Locust alone builds them in one loop that
never yields: the worker sends no heartbeat for about four seconds, which is how
the master comes to take a busy worker for missing. Spawned in batches, the gaps
between heartbeats stay near Locust's one second.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from stampede.load.fixes import SPAWN_BATCH, _batches

LOCUSTFILE = textwrap.dedent('''
    import json, os, time
    from locust import User, constant, events, task
    from locust.runners import MasterRunner

    if os.environ["SPAWN_IN_BATCHES"] == "1":
        from stampede.load.fixes import cooperative_spawning
        cooperative_spawning()

    class SlowToCreate(User):
        wait_time = constant(1)

        def __init__(self, environment):
            super().__init__(environment)
            end = time.perf_counter() + 0.002  # a user that takes 2 ms of CPU to build (a client, a pool, ...)
            while time.perf_counter() < end:
                pass

        @task
        def think(self):
            pass

    beats = {}

    @events.heartbeat_sent.add_listener
    def _beat(client_id, timestamp, **_):
        beats.setdefault(client_id, []).append(timestamp)

    @events.quitting.add_listener
    def _write(environment, **_):
        if isinstance(environment.runner, MasterRunner):
            gaps = [b - a for times in beats.values() for a, b in zip(times, times[1:])]
            with open(os.environ["BEATS_OUT"], "w") as out:
                json.dump({"max_gap_s": max(gaps, default=None), "beats": sum(map(len, beats.values())),
                           "users": environment.runner.user_count}, out)
''')


def test_batches_keep_every_class_count_and_order() -> None:
    assert list(_batches({"A": 120, "B": 30}, 50)) == [{"A": 50}, {"A": 50}, {"A": 20, "B": 30}]
    assert list(_batches({"A": 3, "B": 0, "C": 2}, 50)) == [{"A": 3, "C": 2}]
    assert list(_batches({}, 50)) == []
    counts = {"AgentUser": 12_345, "AdminUser": 678}
    total: dict[str, int] = {}
    for batch in _batches(counts, SPAWN_BATCH):
        assert sum(batch.values()) <= SPAWN_BATCH
        for name, count in batch.items():
            total[name] = total.get(name, 0) + count
    assert total == counts


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _spawn_2000_at_once(tmp_path: Path, in_batches: bool) -> dict:
    locustfile = tmp_path / "slow_users.py"
    locustfile.write_text(LOCUSTFILE)
    out = tmp_path / f"beats-{int(in_batches)}.json"
    env = {**os.environ, "SPAWN_IN_BATCHES": "1" if in_batches else "0", "BEATS_OUT": str(out)}
    port = _free_port()
    common = [sys.executable, "-m", "locust", "-f", str(locustfile), "--loglevel", "WARNING"]
    master = subprocess.Popen(common + ["--master", "--headless", "--master-bind-host", "127.0.0.1",
                                        "--master-bind-port", str(port), "--expect-workers", "1", "-u", "2000",
                                        "-r", "2000", "-t", "10s", "--only-summary"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    worker = subprocess.Popen(common + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, env=env)
    try:
        master.wait(timeout=90)
        worker.wait(timeout=30)
    finally:
        for process in (master, worker):
            if process.poll() is None:
                process.kill()
                process.wait()
    return json.loads(out.read_text())


@pytest.mark.timeout(240)
def test_a_worker_spawning_thousands_of_users_keeps_its_heartbeat_in_batches(tmp_path: Path) -> None:
    alone = _spawn_2000_at_once(tmp_path, in_batches=False)
    batched = _spawn_2000_at_once(tmp_path, in_batches=True)
    assert alone["max_gap_s"] > 2.5  # Locust's own spawn: ~4 s of CPU without a heartbeat (missing after 3)
    assert batched["max_gap_s"] < 2.0, batched
    assert batched["beats"] >= 8


WATCH_SCRIPT = textwrap.dedent('''
    from gevent import monkey; monkey.patch_all()
    import json, sys, time
    import gevent
    from stampede.load import owner_watch

    class Runner:
        user_greenlets = ()

        def __init__(self):
            self.last_heartbeat_timestamp = time.time()
            self.quit_at = None

        def register_message(self, *_args, **_kw):
            pass

        def send_message(self, *_args, **_kw):
            pass

        def quit(self):
            self.quit_at = time.time()

    class Environment:
        process_exit_code = None

    environment = Environment()
    environment.runner = runner = Runner()
    owner_watch.watch_worker(environment, lambda _environment: {"owner_grace_s": 3.0})
    started = time.time()
    gevent.sleep(1.5)
    runner.last_heartbeat_timestamp = time.time()
    stall_end = time.perf_counter() + 4.0  # this worker's own loop held up 4 s (a spawn, a long collection)
    while time.perf_counter() < stall_end:
        pass
    gevent.sleep(0.5)  # the master's beats queued meanwhile are read half a second after the stall
    runner.last_heartbeat_timestamp = time.time()
    survived_stall = runner.quit_at is None
    gevent.sleep(6.0)  # now the master is silent for real
    print(json.dumps({"survived_stall": survived_stall,
                      "quit_after_s": None if runner.quit_at is None else runner.quit_at - runner.last_heartbeat_timestamp}))
''')


def test_a_worker_counts_its_masters_silence_from_the_end_of_its_own_stall() -> None:
    completed = subprocess.run([sys.executable, "-c", WATCH_SCRIPT], capture_output=True, text=True, timeout=60,
                               check=False, env={**os.environ, "STAMPEDE_KILL_SWITCH": ""})
    assert completed.returncode == 0, completed.stderr[-3000:]
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    assert out["survived_stall"]  # before: "no heartbeat from the master for 4 s", a live master left
    assert out["quit_after_s"] is not None and 3.0 < out["quit_after_s"] < 5.5  # a silent master still ends it
