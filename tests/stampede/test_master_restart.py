"""A Locust master SIGKILLed mid-run is started again by its owner: the run goes on, its figures add up.

The owner is a process playing the stages as the Airflow task does (``owner_process.py``),
with one local worker provisioned apart; a canary target counts each request with its time.
What is checked: the run ends cleanly (no stop, both stages judged), the load resumed at
the plan's clock (not from zero), every second the target counted up to the dead master's
last checkpoint is in the results, and the merged stage figures are the series' requests.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import psutil
import pytest

from stampede.infra.canary import Canary
from stampede.load import owner
from stampede.load.runner import MAX_MASTER_RESTARTS
from stampede.steps.teardown import teardown_workers
from stampede.steps.validate import validate
from stampede.steps.provision import provision_workers

from .test_owner import _load_times, _plan, _start_owner, _wait_for, kill_file  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

USERS = 4  # _scenario's users: a request each in flight at most
REPORT_EVERY_S = 3.0  # Locust workers report every 3 s


def _master(run_dir) -> psutil.Process:
    checkpoint = owner.read_checkpoint(run_dir / owner.CHECKPOINT_FILE)
    assert checkpoint is not None
    return psutil.Process(checkpoint.pid)


def _per_second(times: list[float]) -> Counter:
    return Counter(int(t) for t in times)


def _kill_master_when(run_dir, ready, previous_pid: int | None = None, min_age_s: float = 0.0) -> tuple[int, float]:
    def new_master() -> bool:
        checkpoint = owner.read_checkpoint(run_dir / owner.CHECKPOINT_FILE)
        return checkpoint is not None and checkpoint.pid not in (-1, previous_pid)

    _wait_for(new_master, 60, "a (new) master")
    seen_at = time.time()  # a master killed before it streamed a second is not started again (it never ran)
    _wait_for(lambda: ready() and time.time() - seen_at >= min_age_s, 60, "load from the (new) master")
    master = _master(run_dir)
    os.killpg(master.pid, signal.SIGKILL)  # the master's own group: nothing of it survives, as an OOM kill
    return master.pid, time.time()


def test_a_killed_master_is_restarted_and_the_run_goes_on(tmp_path, kill_file, monkeypatch, record_property):
    monkeypatch.setenv("STAMPEDE_CHECKPOINT_S", "2")
    with Canary() as canary:
        plan = _plan(tmp_path, canary, [("first", 16), ("second", 14)], run_id=f"restarted-{os.getpid()}",
                     grace_s=15)
        provision_workers(plan)
        run_dir = tmp_path / "run"
        try:
            process, log_path = _start_owner(plan, tmp_path, "owner")
            started = time.time()
            _, killed_at = _kill_master_when(run_dir, lambda: len(_load_times(canary)) >= 150)
            assert process.wait(120) == 0, log_path.read_text()[-4000:]
            ran = json.loads(log_path.read_text().split("LOADRAN ", 1)[1].splitlines()[0])
            result = validate(plan)
            output = json.loads((run_dir / "locust_output.json").read_text())
            times = _load_times(canary)
        finally:
            teardown_workers(plan)
    restart = output["restarts"][0]
    print(f"master killed {killed_at - started:.1f} s in: figures lost {restart['lost_s']} s, "
          f"{restart['gap_s']} s without figures; load span {times[-1] - times[0]:.1f} s for 30 s planned")
    record_property("master_restart_gap_s", restart["gap_s"])
    assert ran["stopped"] is None and result.stopped is None and result.verdict != "invalid"
    assert "merged from 2 Locust masters: the master died at" in result.figures_note, result.figures_note
    assert "and was restarted" in result.figures_note
    assert len(output["restarts"]) == 1 and output["masters"] == 2
    assert restart["lost_s"] <= 2.0 + 3.0 + 1.0  # a checkpoint interval, a worker report, the supervisor's poll
    assert [s.name for s in result.stages] == ["first", "second"]
    assert all(s.requests > 0 for s in result.stages)
    # resumed at the plan's clock: the load ends with the plan (plus the restart's spawn), not 30 s after the kill
    assert times[-1] - times[0] < 30 + 12
    # exact merge: the stage parts' histograms hold every tagged second's requests of the series
    series = {row["t"]: row for row in output["series"]}
    tagged = sum(row["requests"] for row in output["series"] if row["stage"] is not None)
    in_parts = sum(sum(e["histogram"].values()) for part in output["phases"].values() for e in part.values())
    assert in_parts == tagged
    assert set(output["phases"]) >= {"0/ramp", "0/steady", "1/steady"}
    # every second the target counted up to the dead master's last checkpoint is in the figures
    target = _per_second(times)
    first = min(target)
    # (the worker reports every 3 s: the seconds of its last report before that checkpoint are all there)
    upto = int(restart["figures_until"] - REPORT_EVERY_S) - 2
    seen = sum(target[s] for s in range(first, upto + 1))
    counted = sum(series[s]["requests"] for s in range(first, upto + 1) if s in series)
    assert abs(seen - counted) <= 2 * USERS, (seen, counted)
    missing = [s for s in range(first + 1, upto) if target[s] and not series.get(s, {}).get("requests")]
    assert missing == []


def test_a_master_that_keeps_dying_ends_the_run_as_master_died(tmp_path, kill_file, monkeypatch):
    monkeypatch.setenv("STAMPEDE_CHECKPOINT_S", "2")
    with Canary() as canary:
        plan = _plan(tmp_path, canary, [("hold", 90)], run_id=f"keeps-dying-{os.getpid()}", grace_s=15)
        provision_workers(plan)
        run_dir = tmp_path / "run"
        try:
            process, log_path = _start_owner(plan, tmp_path, "owner")
            pid = None
            for _ in range(MAX_MASTER_RESTARTS + 1):
                before = len(_load_times(canary))
                pid, _ = _kill_master_when(run_dir, lambda: len(_load_times(canary)) >= before + 20, pid,
                                           min_age_s=3 * 2.0)  # three checkpoints (STAMPEDE_CHECKPOINT_S)
            assert process.wait(60) == 0, log_path.read_text()[-4000:]
            result = validate(plan)
        finally:
            teardown_workers(plan)
    assert result.stopped is not None and result.stopped.kind == "master_died"
    assert result.verdict == "invalid"
    assert f"restarted {MAX_MASTER_RESTARTS} times already (at most {MAX_MASTER_RESTARTS}" in log_path.read_text()
    assert f"merged from {MAX_MASTER_RESTARTS + 1} Locust masters" in result.figures_note


# -- the merge itself ---------------------------------------------------------------------------------------
def _part(start: float, end: float, counts: dict, series: list[tuple[int, int]], *, steady_from=None, final=False):
    return {"started_at": start, "finished_at": end, "final_checkpoint": final, "checkpoints": 3,
            "stages": [{"name": "hold", "start": start, "end": end, "steady_from": steady_from}],
            "phases": {key: {"GET /x": {"histogram": h, "failures": 1, "errors": {"boom": 1}}} for key, h in counts.items()},
            "phase_seconds": {key: 4.0 for key in counts}, "created": {"showing": 2}, "iterations": {},
            "breaches": [], "windows": {}, "stopped": None, "load_ended": None if not final else end,
            "series": [{"t": t, "stage": "hold", "phase": "steady", "requests": n, "failures": 0,
                        "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0} for t, n in series]}


def test_merged_masters_add_up_exactly_and_keep_the_stage_whole():
    from stampede.core.histogram import LatencyHistogram
    from stampede.figures.stream import merge_outputs

    dead = _part(100.0, 110.0, {"0/ramp": {"1000": 2}, "0/steady": {"1000": 5, "9000": 1}}, [(101, 3), (109, 4)],
                 steady_from=103)
    last = _part(113.5, 130.0, {"0/ramp": {"1000": 1}, "0/steady": {"9000": 3, "50000": 1}}, [(109, 1), (114, 2)],
                 steady_from=116, final=True)
    merged = merge_outputs([dead, last])
    steady = merged["phases"]["0/steady"]["GET /x"]
    assert LatencyHistogram({int(k): v for k, v in steady["histogram"].items()}).total == 10
    assert steady["histogram"] == LatencyHistogram.merged([{1000: 5, 9000: 1}, {9000: 3, 50000: 1}]).to_dict()
    assert steady["failures"] == 2 and steady["errors"] == {"boom": 2}
    assert merged["phase_seconds"] == {"0/ramp": 8.0, "0/steady": 8.0} and merged["created"] == {"showing": 4}
    assert merged["stages"][0] | {} == {"name": "hold", "start": 100.0, "end": 130.0, "steady_from": 103}
    assert [(r["t"], r["requests"]) for r in merged["series"]] == [(101, 3), (109, 5), (114, 2)]
    assert merged["started_at"] == 100.0 and merged["finished_at"] == 130.0 and merged["masters"] == 2
