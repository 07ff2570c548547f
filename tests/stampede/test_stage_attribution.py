"""Which stage a request counts for: stage boundaries inside a second, and requests in flight at the stop.

The master tags each second with a stage as the second begins; Locust's shape
changes stage a moment later. A stage must still own the second it runs most
of, or a stage stopped early (kill switch) can report no requests at all. And a
request the target served must be recorded: Locust's default stop kills users
mid-request, which drops the slowest requests and leaves what they created or
deleted uncounted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stampede.infra.canary import Canary
from stampede.steps.preflight import RunRequest, preflight
from stampede.surfaces.sequence import run_load

POLLING_LOCUSTFILE = Path(__file__).with_name("polling_locustfile.py")


def _aggregator(script: str) -> dict:
    """Run ``script`` against a fresh ``RunAggregator`` in a subprocess (importing Locust patches gevent)."""
    code = """
import json, types
from stampede.core.histogram import LatencyHistogram
from stampede.load.plugin import RunAggregator
runner = types.SimpleNamespace(user_count=4, state="running")
env = types.SimpleNamespace(runner=runner, parsed_options=None)
stages = [{"name": name, "users": 4, "spawn_rate": 4, "duration_s": 5, "thresholds": {}} for name in ("one", "two")]
agg = RunAggregator(env, {"stages": stages})
def requests(sec, n):
    h = LatencyHistogram(); [h.record_ms(5.0) for _ in range(n)]
    agg.add_report({"seconds": {str(sec): {"GET /x": [h.to_dict(), 0, {}]}}})
def stage_requests(index):
    return sum(len(slot["histogram"]) for key, eps in agg.phases.items() if key.startswith(f"{index}/")
               for slot in eps.values())
""" + script
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_a_stage_that_starts_just_after_the_tick_owns_that_second():
    out = _aggregator("""
agg.enter_stage(0, 1000.2); agg.tick(1000.3)
for sec in range(1001, 1006): agg.tick(sec + 0.001)
requests(1005, 7)                        # completed early in 1005, reported before the stage changes
agg.enter_stage(1, 1005.015)             # the shape moves on 15 ms after the tick tagged 1005 for stage one
agg.tick(1006.001); agg.end_load(1006.4); agg.tick(1007.001)
print(json.dumps({"owner": agg.timeline[1005][0], "seconds": agg.phase_durations(1008.0),
                  "two": stage_requests(1), "one": stage_requests(0)}))
""")
    assert out["owner"] == 1
    assert out["two"] == 7 and out["one"] == 0
    assert out["seconds"] == {"0/ramp": 0.8, "0/steady": 4.0, "1/steady": 1.4}


def test_a_stage_that_starts_late_in_a_second_leaves_it_to_the_stage_before():
    out = _aggregator("""
agg.enter_stage(0, 1000.0); agg.tick(1000.001)
for sec in range(1001, 1006): agg.tick(sec + 0.001)
agg.enter_stage(1, 1005.7)
agg.tick(1006.001); agg.end_load(1006.4)
print(json.dumps({"owner": agg.timeline[1005][0], "seconds": agg.phase_durations(1008.0)}))
""")
    assert out["owner"] == 0
    assert out["seconds"] == {"0/ramp": 1.0, "0/steady": 5.0, "1/steady": 0.4}


def test_requests_finishing_after_the_load_ended_count_for_the_last_stage():
    out = _aggregator("""
agg.enter_stage(0, 1000.0)
for sec in range(1000, 1003): agg.tick(sec + 0.001)
agg.enter_stage(1, 1003.1); agg.tick(1004.001); agg.end_load(1004.9)
requests(1005, 3); requests(1006, 1)     # in flight at the stop, finished during the graceful stop
agg.tick(1005.001); agg.tick(1006.001); agg.tick(1007.001)
agg.finalize(before=1100)
rows = {row["t"]: row["stage"] for row in agg.series}
print(json.dumps({"two": stage_requests(1), "rows": [rows.get(1005), rows.get(1006)]}))
""")
    assert out["two"] == 4
    assert out["rows"] == ["two", "two"]  # the series agrees with the stage's figures


@pytest.mark.integration
@pytest.mark.parametrize("workers", [0, 1], ids=["standalone", "one-worker"])
def test_every_request_the_target_served_is_recorded_when_the_load_stops(tmp_path, workers):
    """Each request takes 0.8 s and the think time is ~0.1 s, so most users are mid-request at the stop."""
    scenario = tmp_path / "slow.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "slow", "journeys": {"PollingUser": 1}, "think_time_s": [0.05, 0.15],
        "locustfile": str(POLLING_LOCUSTFILE),
        "stages": [{"name": "hold", "users": 6, "spawn_rate": 6, "duration_s": 4}],
    }))
    with Canary(delay_s=0.8) as canary:
        plan = preflight(RunRequest(scenarios=[str(scenario)], target=canary.base_url, run_id=f"in-flight-{workers}", workers=workers, out_dir=str(tmp_path / "run")))
        result = run_load(plan)
        arrivals = [hit.t for hit in canary.requests if hit.path.startswith("/v1/escrows")]
    served = len(arrivals)
    load_ended = json.loads((tmp_path / "run" / "locust_output.json").read_text())["load_ended"]
    assert max(arrivals) < load_ended + 0.5  # no request started after the load ended (0.8 s each)
    (hold,) = result.stages
    assert served >= 18  # 6 users x 4 s / ~0.9 s per request, so the stop did catch requests in flight
    assert sum(p.requests for p in (hold.ramp, hold.steady) if p) == served
    assert hold.failures == 0


def test_ending_every_user_lets_requests_in_flight_finish_and_starts_none():
    """200 users, each request 0.3 s, think time 0.01–0.05 s: at the end, no task starts; those in flight finish."""
    code = """
import json, time, gevent
from locust import User, task, between
from locust.env import Environment
from stampede.load.final_reports import end_every_user
log = {"started": [], "finished": []}
class Busy(User):
    wait_time = between(0.01, 0.05)
    @task
    def work(self):
        log["started"].append(time.time())
        gevent.sleep(0.3)  # a request in flight
        log["finished"].append(time.time())
env = Environment(user_classes=[Busy])
runner = env.create_local_runner()
runner.start(200, spawn_rate=200)
gevent.sleep(1.5)
ended = time.time()
in_flight = len(log["started"]) - len(log["finished"])
end_every_user(runner)
gevent.sleep(1.5)  # those in flight need 0.3 s
print(json.dumps({"in_flight": in_flight, "late_starts": sum(t > ended for t in log["started"]),
                  "finished_after": sum(t > ended for t in log["finished"]), "alive": runner.user_count}))
"""
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    assert out["in_flight"] > 50  # most users were mid-request at the end
    assert out["late_starts"] == 0
    assert out["finished_after"] == out["in_flight"]  # none killed mid-request
    assert out["alive"] == 0


def test_a_stage_that_ramps_up_late_in_a_second_takes_it_from_the_steady_stage_before():
    # the next level's spawn starts 0.8 s into the second: its logins and new connections, slower than the
    # steady requests, must not count in the level before's steady part (the users bench's first level
    # failed its p95 from that one second)
    out = _aggregator("""
agg.stages[1]["users"] = 8
agg.enter_stage(0, 1000.0); agg.tick(1000.001)
for sec in range(1001, 1006): agg.tick(sec + 0.001)
requests(1004, 5)                        # steady requests of stage one
agg.enter_stage(1, 1005.8)
requests(1005, 9)                        # the second the spawn began in
agg.tick(1006.001); agg.tick(1007.001)
print(json.dumps({"owner": list(agg.timeline[1005][:2]), "one_steady": sum(
    len(slot["histogram"]) for slot in agg.phases.get("0/steady", {}).values()), "two": stage_requests(1)}))
""")
    assert out["owner"] == [1, "ramp"]
    assert out["one_steady"] == 5 and out["two"] == 9
