"""The master's start and end waits end with what they wait for, and never wait longer than Locust's.

Run in a subprocess: importing Locust patches gevent. The runner is a stand-in with
Locust's own ``WorkerNodes``, so ``ready`` and membership are Locust's.
"""

from __future__ import annotations

import json
import subprocess
import sys

SETUP = """
import json, time, types
import gevent
from locust.runners import WorkerNode, WorkerNodes
from stampede.load import master_waits

class Server:
    def __init__(self): self.sent = []
    def send_to_client(self, msg): self.sent.append((msg.type, msg.node_id))

class Group:
    def __init__(self): self.kills = 0
    def kill(self, block=True): self.kills += 1

def runner_with(*workers):
    runner = types.SimpleNamespace(clients=WorkerNodes(), server=Server(), greenlet=Group(), stops=[])
    runner.stop = lambda send_stop_to_client=True: runner.stops.append(send_stop_to_client)
    for worker in workers:
        runner.clients[worker] = WorkerNode(worker)
    return runner
"""


def _run(script: str) -> dict:
    done = subprocess.run([sys.executable, "-c", SETUP + script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_start_goes_on_as_soon_as_the_workers_are_ready():
    result = _run("""
runner = runner_with()
def connect():
    gevent.sleep(0.15)  # not spawn_later: the loop's clock is stale until it first runs
    runner.clients["w1"] = WorkerNode("w1")
gevent.spawn(connect)
started = time.monotonic()
ready = master_waits.wait_for_workers(runner, 1, max_wait_s=60)
print(json.dumps({"ready": ready, "waited": time.monotonic() - started}))
""")
    assert result["ready"]
    assert 0.1 < result["waited"] < 0.5  # Locust's own loop would have slept a whole second


def test_workers_that_never_come_are_left_to_locusts_own_wait():
    result = _run("""
runner = runner_with()
started = time.monotonic()
ready = master_waits.wait_for_workers(runner, 1, max_wait_s=0.3)
print(json.dumps({"ready": ready, "waited": time.monotonic() - started}))
""")
    assert not result["ready"]
    assert 0.3 <= result["waited"] < 1.0  # bounded by --expect-workers-max-wait, then Locust says it gave up


def test_quit_waits_for_every_workers_answer_then_quits_once():
    result = _run("""
runner = runner_with("w1", "w2")
master_waits.quit_when_workers_quit(runner)
def answer(worker, after):
    gevent.sleep(after)
    del runner.clients[worker]  # what Locust's master does with a worker's "quit" (after its last stats)
gevent.spawn(answer, "w1", 0.05); gevent.spawn(answer, "w2", 0.1)
started = time.monotonic()
runner.quit()
first = time.monotonic() - started
runner.quit(); runner.quit()  # the shape's end, the shutdown: Locust quits a headless master three times
print(json.dumps({"first": first, "all": time.monotonic() - started, "sent": runner.server.sent,
                  "kills": runner.greenlet.kills, "stops": runner.stops}))
""")
    assert 0.09 < result["first"] < 0.4  # both answered; not Locust's fixed half second
    assert result["all"] - result["first"] < 0.05
    assert result["sent"] == [["quit", "w1"], ["quit", "w2"]]  # told once
    assert result["kills"] == 3 and result["stops"] == [False]


def test_a_worker_that_does_not_answer_gets_locusts_half_second():
    result = _run("""
runner = runner_with("silent")
master_waits.quit_when_workers_quit(runner)
started = time.monotonic()
runner.quit()
print(json.dumps({"waited": time.monotonic() - started}))
""")
    assert 0.5 <= result["waited"] < 0.8
