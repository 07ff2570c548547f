"""The figure stream: real Locust masters checkpoint as they go, and a dead master's run is rebuilt from it.

- A normal run: the stage figures rebuilt from the stream equal the master's own final figures
  (from its in-memory per-stage histograms), and so do the stage durations, the windows and the series.
- A master SIGKILLed mid-run: no ``locust_output.json``; every second before its last checkpoint
  is in the rebuilt results, which are marked (``figures_source: stream``, stop ``master_died``)
  and still judged by validation.
- The reader tolerates a torn last line; a writer never appends after one.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import yaml

from stampede.core.histogram import LatencyHistogram
from stampede.core.paths import Artifact
from stampede.figures import stream as figure_stream
from stampede.figures.stages import stage_results
from stampede.infra.fixed_latency_target import FixedLatencyTarget
from stampede.steps import run_stages as run_stages_step
from stampede.steps.preflight import RunRequest, preflight
from stampede.steps.provision import provision_workers
from stampede.steps.teardown import teardown_workers
from stampede.steps.validate import validate
from stampede.surfaces import cli
from stampede.surfaces.sequence import run_load

POLLING_LOCUSTFILE = Path(__file__).with_name("polling_locustfile.py")  # PollingUser
DELAY_MS = 5.0


@pytest.fixture(scope="module")
def fixed_target(tmp_path_factory):
    with FixedLatencyTarget(DELAY_MS, tmp_path_factory.mktemp("target")) as target:
        yield target


def _plan(tmp_path: Path, target: str, run_id: str, stages: list[dict], *, workers: int, thresholds: dict | None = None):
    scenario = tmp_path / f"{run_id}.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": run_id, "journeys": {"PollingUser": 1}, "think_time_s": [0.02, 0.08],
        "locustfile": str(POLLING_LOCUSTFILE), "stages": stages,
        "thresholds": thresholds or {"p95_ms": 500, "error_rate": 0.01},
    }))
    return preflight(RunRequest(scenarios=[str(scenario)], target=target, run_id=run_id, workers=workers,
                                out_dir=str(tmp_path / "run")))


def _rebuilt(run_dir: Path) -> dict:
    checkpoints, torn = figure_stream.read_stream(run_dir / Artifact.FIGURE_STREAM)
    assert torn == 0
    # through JSON, as validation would read it from the run folder
    return json.loads(json.dumps(figure_stream.rebuild_output(checkpoints)))


# -- a normal run: the stream says exactly what the master says ------------------------------------------------
@pytest.mark.integration
def test_figures_rebuilt_from_the_stream_equal_the_masters_own(fixed_target, tmp_path, monkeypatch):
    monkeypatch.setenv("STAMPEDE_CHECKPOINT_S", "2")
    plan = _plan(tmp_path, fixed_target.base_url, "stream-equal", [
        {"name": "ramp", "users": 8, "spawn_rate": 4, "duration_s": 5},
        {"name": "hold", "users": 8, "spawn_rate": 8, "duration_s": 6},
    ], workers=1, thresholds=[
        {"stat": "p95", "below": 500}, {"stat": "error_rate", "below": 0.01},
        {"stat": "p99", "below": 800, "window_s": 3},
        {"stat": "p50", "below": 1, "endpoint": "GET /escrows"},  # fails its stage: not a pass on both sides by luck
    ])
    result = run_load(plan)
    run_dir = tmp_path / "run"
    master = json.loads((run_dir / Artifact.LOCUST_OUTPUT).read_text())
    rebuilt = _rebuilt(run_dir)

    assert master["figures_source"] == "master" and rebuilt["figures_source"] == "stream"
    assert master["checkpoints"] == rebuilt["checkpoints"] >= 5  # one every 2 s over 11 s of load, and the final
    assert rebuilt["final_checkpoint"] is True
    planned = [s.__dict__ for s in plan.stages]
    assert stage_results(rebuilt, planned) == stage_results(master, planned)
    assert sum(s.requests for s in result.stages) > 200  # a real load, not two empty stages comparing equal
    for key in ("phases", "phase_seconds", "stages", "series", "windows", "breaches", "created", "stopped",
                "load_ended", "started_at", "finished_at", "worker_count", "iterations"):
        assert rebuilt[key] == master[key], key
    assert master["windows"], "the windowed threshold left its worst window in both"


# -- a master killed mid-run: its results come from the stream -------------------------------------------------
def _master_of(run_dir: Path, deadline_s: float = 30.0) -> psutil.Process:
    """The Locust master this test started (a child of this process writing into ``run_dir``)."""
    deadline = time.time() + deadline_s
    while time.time() < deadline:
        for child in psutil.Process().children(recursive=True):
            try:
                command = child.cmdline()
            except psutil.Error:
                continue
            if "--stampede-out" in command and str(run_dir) in " ".join(command) and "--master" in command:
                return child
        time.sleep(0.2)
    raise AssertionError("the Locust master did not start")


@pytest.mark.integration
def test_a_sigkilled_master_loses_only_its_last_interval(fixed_target, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("STAMPEDE_CHECKPOINT_S", "2")
    monkeypatch.setenv("STAMPEDE_MASTER_RESTARTS", "0")  # not started again (test_master_restart.py): the run ends
    plan = _plan(tmp_path, fixed_target.base_url, "stream-kill", [
        {"name": "ramp", "users": 6, "spawn_rate": 6, "duration_s": 4},
        {"name": "hold", "users": 6, "spawn_rate": 6, "duration_s": 40},
    ], workers=1)
    run_dir = tmp_path / "run"
    provision_workers(plan)
    ran: dict = {}
    try:
        load = threading.Thread(target=lambda: ran.setdefault("load", run_stages_step.run_stages(plan)), daemon=True)
        load.start()
        master = _master_of(run_dir)
        stream_dir = run_dir / Artifact.FIGURE_STREAM
        deadline = time.time() + 40
        while time.time() < deadline:  # into the hold stage, several checkpoints streamed
            checkpoints, _ = figure_stream.read_stream(stream_dir)
            stages = [c["stages"] for c in checkpoints if c.get("stages")]
            if stages and stages[-1][1]["start"] is not None and time.time() - stages[-1][1]["start"] > 9:
                break
            time.sleep(0.5)
        # a person follows the run: the CLI's finished-so-far report from the last checkpoint
        assert cli.main(["report", "--run-folder", str(run_dir)]) == 0
        printed = capsys.readouterr().out
        assert "IN PROGRESS" in printed and "in progress: built from the stream up to" in printed
        assert "hold" in printed and "final" not in printed
        progress = (run_dir / Artifact.PROGRESS / Artifact.REPORT).read_text()
        assert "in progress: built from the stream up to" in progress
        assert not (run_dir / Artifact.REPORT).exists() and not (run_dir / Artifact.RESULTS).exists()
        os.kill(master.pid, signal.SIGKILL)
        killed_at = time.time()
        load.join(timeout=60)
        assert not load.is_alive()
    finally:
        teardown_workers(plan)

    checkpoints, torn = figure_stream.read_stream(run_dir / Artifact.FIGURE_STREAM)
    last = checkpoints[-1]
    assert not last["final"] and killed_at - last["at"] <= 2.0 + 1.5  # at most one interval (and a tick) lost
    output = json.loads((run_dir / Artifact.LOCUST_OUTPUT).read_text())
    assert output["figures_source"] == "stream"
    assert output["stopped"]["kind"] == "master_died"
    assert "built from the stream up to" in output["figures_note"] and "the master died" in output["figures_note"]
    assert ran["load"].stopped["kind"] == "master_died"

    # every second the last checkpoint had merged is in the rebuilt results, with its requests
    streamed: dict[int, int] = {}
    for checkpoint in checkpoints:
        for sec, key, endpoints in checkpoint["seconds"]:
            if key is not None:
                streamed[sec] = streamed.get(sec, 0) + sum(sum(counts.values()) for counts, _, _ in endpoints.values())
    series = {row["t"]: row["requests"] for row in output["series"]}
    first = int(min(s["start"] for s in output["stages"] if s["start"] is not None))
    # the worker reports every 3 s: the seconds up to 4 s before the last checkpoint had all arrived
    for sec in range(first + 1, int(last["at"]) - 4):
        assert streamed.get(sec, 0) > 0, f"second {sec} had requests but is not in the stream"
        assert series.get(sec) == streamed[sec], sec
    stages = stage_results(output, [s.__dict__ for s in plan.stages])
    assert sum(s.ramp.requests + s.steady.requests for s in stages) == sum(streamed.values())

    # still judged: validation runs on the rebuilt output; the run is invalid, its stages were measured.
    # Also when the load step's process died with its master and wrote nothing: validation rebuilds it.
    (run_dir / Artifact.LOCUST_OUTPUT).unlink()
    result = validate(plan)
    assert json.loads((run_dir / Artifact.LOCUST_OUTPUT).read_text())["phases"] == output["phases"]
    assert "exit code unknown" in result.figures_note
    assert result.figures_source == "stream" and result.verdict == "invalid"
    assert result.stopped is not None and result.stopped.kind == "master_died"
    hold = result.stages[1]
    assert hold.requests > 100 and hold.checks and all(c.judged for c in hold.checks)


# -- the segments themselves ------------------------------------------------------------------------------------
def test_a_torn_last_line_is_skipped_and_never_appended_after(tmp_path):
    writer = figure_stream.StreamWriter(tmp_path)
    for n in (1, 2):
        assert writer.append({"format": figure_stream.FORMAT, "checkpoint": n, "at": float(n)})
    writer.close()
    (segment,) = writer.written
    with segment.open("ab") as handle:
        handle.write(b'{"format": 1, "checkpoint": 3, "at": 3.0, "seconds": [[17, "0/st')  # SIGKILL mid-write
    checkpoints, torn = figure_stream.read_stream(tmp_path)
    assert [c["checkpoint"] for c in checkpoints] == [1, 2] and torn == 1

    again = figure_stream.StreamWriter(tmp_path)  # a new master process: a new segment, never after the torn line
    assert again.append({"format": figure_stream.FORMAT, "checkpoint": 4, "at": 4.0})
    again.close()
    assert again.written[0] != segment
    checkpoints, torn = figure_stream.read_stream(tmp_path)
    assert [c["checkpoint"] for c in checkpoints] == [1, 2, 4] and torn == 1


def test_segments_rotate_so_an_object_store_gets_small_files(tmp_path):
    writer = figure_stream.StreamWriter(tmp_path, segment_checkpoints=3)
    for n in range(7):
        writer.append({"format": figure_stream.FORMAT, "checkpoint": n, "at": float(n)})
    writer.close()
    assert [n for n, _ in figure_stream.segments(tmp_path)] == [1, 2, 3]
    assert [c["checkpoint"] for c in figure_stream.read_stream(tmp_path)[0]] == list(range(7))


def test_a_refused_write_keeps_the_data_for_the_next_checkpoint(tmp_path):
    blocked = tmp_path / "stream"
    blocked.write_text("a file where the folder should be")  # every open fails
    writer = figure_stream.StreamWriter(blocked)
    assert writer.append({"format": figure_stream.FORMAT, "checkpoint": 1, "at": 1.0}) is False


def test_the_interval_is_at_most_ten_seconds(monkeypatch):
    monkeypatch.delenv("STAMPEDE_CHECKPOINT_S", raising=False)
    assert figure_stream.interval_of({}) == figure_stream.DEFAULT_INTERVAL_S <= 10
    assert figure_stream.interval_of({"checkpoint_interval_s": 60}) == 10.0
    monkeypatch.setenv("STAMPEDE_CHECKPOINT_S", "0.1")
    assert figure_stream.interval_of({}) == 1.0


# -- the object store: what the master appends reaches it while the run goes -----------------------------------
@pytest.fixture
def bucket(moto_server, monkeypatch):
    import boto3

    from stampede.core import artifacts

    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": moto_server.endpoint_url, "region_name": "us-east-1"},
    }))
    monkeypatch.setenv(artifacts.ENV_STORE, "s3://stampede-stream/runs")
    s3 = boto3.client("s3", endpoint_url=moto_server.endpoint_url, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    s3.create_bucket(Bucket="stampede-stream")
    yield s3
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket="stampede-stream"):
        for item in page.get("Contents", []):
            s3.delete_object(Bucket="stampede-stream", Key=item["Key"])
    s3.delete_bucket(Bucket="stampede-stream")


def _checkpoint(n: int, start: float) -> dict:
    sec = int(start) + n
    return {
        "format": figure_stream.FORMAT, "master": "1-0", "checkpoint": n, "at": sec + 1.0, "started_at": start,
        "final": False, "current_stage": 0, "load_ended": None, "stopped": None, "created": {}, "iterations": {},
        "windows": {}, "worker_count": 1,
        "stages": [{"name": "hold", "users": 2, "index": 0, "start": start, "end": None, "steady_from": int(start)}],
        "timeline": [[sec, 0, "steady", 2]],
        "seconds": [[sec, "0/steady", {"GET /x": [{1000 * (n + 1): 3}, 1, {"HTTPError: 500": 1}]}]],
        "series": [],
        "breaches": [],
    }


@pytest.mark.integration
def test_the_stream_reaches_the_store_as_it_grows_and_another_host_rebuilds_from_it(bucket, tmp_path):
    from stampede.core import artifacts
    from stampede.core.artifacts import RunFolder
    from stampede.load.runner import LocustRun

    store = artifacts.store_root() / "LT-stream"
    host_a, host_b = RunFolder(tmp_path / "a" / "LT-stream", store), RunFolder(tmp_path / "b" / "LT-stream", store)
    writer = figure_stream.StreamWriter(host_a.path / Artifact.FIGURE_STREAM, segment_checkpoints=2)
    start = 1_800_000_000.25

    def stored() -> list[str]:
        return sorted(o["Key"] for o in bucket.list_objects_v2(Bucket="stampede-stream").get("Contents", []))

    with run_stages_step.publishing_stream(host_a, 0.3):
        for n in range(3):
            writer.append(_checkpoint(n, start))
        deadline = time.time() + 10
        while "runs/LT-stream/stream/figures-000002.jsonl" not in stored() and time.time() < deadline:
            time.sleep(0.1)
        assert "runs/LT-stream/stream/figures-000002.jsonl" in stored()  # while the run goes, not at its end
        writer.append(_checkpoint(3, start))
    writer.close()

    # the master's host is gone: another host rebuilds the run from the store's copy
    run = LocustRun(output_path=host_b.path / Artifact.LOCUST_OUTPUT, exit_code=-9)
    output = run_stages_step.output_of(run, host_b)
    assert output["figures_source"] == "stream" and output["stopped"]["kind"] == "master_died"
    assert output["figures_until"] == int(start) + 3 + 1.0  # the last checkpoint's, published at the end
    phase = output["phases"]["0/steady"]["GET /x"]
    assert sum(phase["histogram"].values()) == 12 and phase["failures"] == 4 and phase["errors"] == {"HTTPError: 500": 4}
    assert host_b.read_json(Artifact.LOCUST_OUTPUT)["figures_source"] == "stream"  # and in the store for the next step


_BOUNDED_STATS = """
import json
from unittest import mock
import locust.stats
from locust.stats import RequestStats
from stampede.load.aggregator import LOCUST_HISTORY_KEEP, LOCUST_PER_SECOND_KEEP_S, bound_locust_stats

stats = RequestStats()
clock = [1_800_000_000.0]
with mock.patch.object(locust.stats.time, "time", lambda: clock[0]):  # an hour in a moment
    stats.total.start_time = clock[0]
    for second in range(3600):  # 2 requests a second, one failed every 10 s
        clock[0] = 1_800_000_000.0 + second
        for _ in range(2):
            stats.log_request("GET", "/x", 10, 100)
        if second % 10 == 0:
            stats.log_error("GET", "/x", "boom")
        stats.history.append({"t": second})
    entry = stats.get("/x", "GET")
    before = [entry.current_rps, stats.total.current_rps, stats.total.num_requests]
    sizes_before = [len(entry.num_reqs_per_sec), len(stats.history)]
    bound_locust_stats(stats, clock[0])
    print(json.dumps({"keep": [LOCUST_PER_SECOND_KEEP_S, LOCUST_HISTORY_KEEP], "before": before, "after": [entry.current_rps, stats.total.current_rps, stats.total.num_requests],
                      "sizes_before": sizes_before, "reqs": len(entry.num_reqs_per_sec),
                      "total_reqs": len(stats.total.num_reqs_per_sec), "fails": len(entry.num_fail_per_sec),
                      "history": len(stats.history), "last": stats.history[-1]}))
"""


def test_locusts_own_per_second_counts_stay_bounded_and_its_current_rps_is_unchanged():
    import subprocess
    import sys

    # in a process of its own: Locust monkey-patches what this one has imported
    found = json.loads(subprocess.run([sys.executable, "-c", _BOUNDED_STATS], capture_output=True, text=True,
                                      check=True, timeout=60).stdout)
    keep_s, keep_rows = found["keep"]
    assert found["sizes_before"] == [3600, 3600]  # Locust alone keeps every second and every row
    assert found["reqs"] <= keep_s + 1 and found["total_reqs"] <= keep_s + 1
    assert found["fails"] <= keep_s // 10 + 1
    assert found["history"] == keep_rows and found["last"] == {"t": 3599}
    assert found["after"] == found["before"] == [2.0, 2.0, 7200]


def test_a_pause_between_stages_counts_for_neither():
    """A live search pauses between steps: each step has the seconds it ran, not the pause's."""
    from stampede.figures.stream import phase_durations

    # step 0 runs 1000.25-1005.75, a pause (untagged), step 1 runs 1008.5-1012.5, then the load ends at 1013.2
    stages = [{"index": 0, "start": 1000.25, "end": 1005.75}, {"index": 1, "start": 1008.5, "end": 1012.5},
              {"index": 2, "start": None, "end": None}]
    timeline = {s: (0, "steady", 4) for s in range(1000, 1006)} | {s: (1, "steady", 8) for s in range(1008, 1013)}
    seconds = {"0/steady": 6, "1/steady": 5}
    assert phase_durations(seconds, stages, timeline, 1013.2, 1014.0) == {"0/steady": 5.5, "1/steady": 4.0}
    # while paused (the load not ended), the step that ended is already complete
    assert phase_durations({"0/steady": 6}, stages[:1], timeline, None, 1007.0) == {"0/steady": 5.5}
    # contiguous stages (a staged run) share their boundary second as before
    staged = [{"index": 0, "start": 1000.25, "end": 1003.5}, {"index": 1, "start": 1003.5, "end": 1006.75}]
    tagged = {s: (0, "steady", 4) for s in range(1000, 1004)} | {s: (1, "steady", 8) for s in range(1004, 1007)}
    assert phase_durations({"0/steady": 4, "1/steady": 3}, staged, tagged, 1006.75, 1007.0) == {
        "0/steady": 3.75, "1/steady": 2.75}


def test_requests_between_merges_every_endpoint_and_checkpoint_of_those_seconds_only():
    def hist(*values_ms: float) -> dict[int, int]:
        histogram = LatencyHistogram()
        for value in values_ms:
            histogram.record_ms(value)
        return histogram.to_dict()

    checkpoints = [
        {"seconds": [[100, "0/ramp", {"GET /a": [hist(1000.0), 1, {}]}],  # before the window
                     [101, "0/steady", {"GET /a": [hist(20.0, 21.0), 0, {}], "POST /b": [hist(22.0), 0, {}]}]]},
        {"seconds": [[101, "0/steady", {"GET /a": [hist(23.0), 0, {}]}],  # a late report of the same second: a delta
                     [102, None, {"GET /a": [hist(24.0), 0, {}]}],  # no stage's, but requests the target saw
                     [103, "0/steady", {"GET /a": [hist(900.0), 0, {}]}]]},  # at the window's end: excluded
    ]
    merged = figure_stream.requests_between(checkpoints, 101, 103)
    assert merged.total == 5
    assert 20.0 <= merged.percentile_ms(0.5) <= 22.5 and merged.percentile_ms(1.0) < 25.0
    assert figure_stream.requests_between(checkpoints, 100, 104).total == 7
    assert figure_stream.requests_between(checkpoints, 104, 200).total == 0
