"""The heartbeat's rules without processes: when a beat is stale, what proves the load stopped, the plan's grace."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from stampede.core.stops import StopKind
from stampede.load import owner
from stampede.plan.scenario import DEFAULT_OWNER_GRACE_S, ScenarioError, parse_scenario

SCENARIO = {"name": "s", "journeys": {"agent": 1}, "stages": [{"name": "a", "users": 1, "spawn_rate": 1, "duration_s": 5}]}


def test_a_fresh_beat_is_an_owner_and_a_stale_one_is_lost(tmp_path):
    path = tmp_path / owner.OWNER_FILE
    owner.write_beat(path, owner.Beat(owner="h:1", beat_at=100.0, grace_s=3.0))
    assert owner.owner_gone(path, 3.0, since=0.0, now=102.9) is None
    lost = owner.owner_gone(path, 3.0, since=0.0, now=103.1)
    assert lost.kind == StopKind.OWNER_LOST and "h:1" in lost.reason and "grace of 3 s" in lost.reason


def test_an_ended_beat_stops_at_once_and_no_beat_counts_from_the_watchs_start(tmp_path):
    path = tmp_path / owner.OWNER_FILE
    assert owner.owner_gone(path, 3.0, since=100.0, now=102.0) is None  # the owner beats before the master starts
    assert owner.owner_gone(path, 3.0, since=100.0, now=103.5).kind == StopKind.OWNER_LOST
    owner.write_beat(path, owner.Beat(owner="h:1", beat_at=time.time(), grace_s=3.0, ended="operator"))
    assert owner.owner_gone(path, 3.0, since=0.0).kind == StopKind.STOPPED
    path.write_text("{half a beat")
    assert owner.owner_gone(path, 3.0, since=0.0, now=10.0).kind == StopKind.OWNER_LOST  # unreadable: no owner


def test_load_is_proved_stopped_only_without_a_live_master_and_a_fresh_beat(tmp_path):
    beat_file, checkpoint_file = tmp_path / owner.OWNER_FILE, tmp_path / owner.CHECKPOINT_FILE
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        owner.Checkpoint.of(sleeper.pid, port=None, started_at=time.time(), run_tag="t",
                            log_path=tmp_path / "m.log").save(checkpoint_file)
        owner.write_beat(beat_file, owner.Beat(owner="h:1", beat_at=time.time() - 60, grace_s=3.0))
        assert "still running" in owner.load_stopped(beat_file, [checkpoint_file])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert owner.load_stopped(beat_file, [checkpoint_file]) is None
    owner.write_beat(beat_file, owner.Beat(owner="h:1", beat_at=time.time(), grace_s=3.0))
    assert "still beating" in owner.load_stopped(beat_file, [checkpoint_file])
    owner.write_beat(beat_file, owner.Beat(owner=f"{owner.host_name()}:{sleeper.pid}", beat_at=time.time(),
                                           grace_s=60.0))
    assert owner.load_stopped(beat_file, [checkpoint_file]) is None  # its owner died here: nobody beats for it


def test_a_reused_pid_is_not_the_checkpoints_master(tmp_path):
    checkpoint = owner.Checkpoint(host=owner.host_name(), pid=os.getpid(), create_time=1.0, port=None,
                                  started_at=0.0)
    assert owner.master_process(checkpoint) is None
    elsewhere = owner.Checkpoint(host="another-host", pid=os.getpid(), create_time=0.0, port=None, started_at=0.0)
    assert owner.master_process(elsewhere) is None


def test_the_heartbeat_thread_beats_and_ends(tmp_path):
    path = tmp_path / owner.OWNER_FILE
    mirrored = []
    beat = owner.Heartbeat(path, 5.0, mirror=mirrored.append).start()
    first = owner.read_beat(path).beat_at
    time.sleep(1.2)
    assert owner.read_beat(path).beat_at > first
    beat.end("done", master_ended=True)
    final = owner.read_beat(path)
    assert final.ended == "done" and final.master_ended and mirrored[-1].ended == "done"


@pytest.mark.parametrize("value", [0, 0.5, 121, "5", True, float("nan")])
def test_the_grace_is_validated(value):
    with pytest.raises(ScenarioError, match="owner_grace_s: must be seconds from 1 to 120"):
        parse_scenario({**SCENARIO, "owner_grace_s": value})


def test_the_grace_defaults_and_round_trips():
    from stampede.plan.run_plan import RunPlan

    assert parse_scenario(SCENARIO).owner_grace_s is None
    scenario = parse_scenario({**SCENARIO, "owner_grace_s": 90})
    plan = RunPlan(run_id="r", target="http://127.0.0.1:9/v1", environment="local", scenarios=(scenario,), workers=0)
    again = RunPlan.from_dict(plan.to_dict())
    assert again.owner_grace_s == 90.0 and again.locust_plan()["owner_grace_s"] == 90.0
    default = RunPlan(run_id="r", target="http://127.0.0.1:9/v1", environment="local",
                      scenarios=(parse_scenario(SCENARIO),), workers=0)
    assert default.owner_grace_s == DEFAULT_OWNER_GRACE_S
