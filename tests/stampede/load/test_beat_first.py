"""A takeover try beats for the run's master first, before its slow warm-up (``owner.beat_first``).

Real files and a real process standing in for the master (its checkpoint names it by pid and start time).
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stampede.load import owner

RUN_TAG = "loadtest_manual__takeover"
TASKS = Path(__file__).resolve().parents[3] / "plugins" / "stampede" / "surfaces" / "airflow_tasks.py"


@pytest.fixture
def master():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def _checkpoint(run_dir: Path, pid: int, *, run_tag: str = RUN_TAG) -> None:
    owner.Checkpoint.of(pid, port=None, started_at=time.time() - 100, run_tag=run_tag,
                        log_path=run_dir / "master.log").save(run_dir / owner.CHECKPOINT_FILE)


def _old_owner_beat(run_dir: Path, *, age_s: float, grace_s: float = 3.0, ended: str | None = None) -> None:
    owner.write_beat(run_dir / owner.OWNER_FILE,
                     owner.Beat(owner=f"{owner.host_name()}:999999", beat_at=time.time() - age_s, grace_s=grace_s,
                                ended=ended))


def test_a_takeover_try_beats_at_once_and_goes_on_beating(tmp_path, master):
    _checkpoint(tmp_path, master.pid)
    _old_owner_beat(tmp_path, age_s=2.0)  # the dead try's last beat, within the grace of 3 s
    asked = time.time()
    heartbeat = owner.beat_first(tmp_path, RUN_TAG)
    try:
        assert heartbeat is not None
        beat = owner.read_beat(tmp_path / owner.OWNER_FILE)
        assert beat is not None and beat.owner == owner.this_owner() and beat.beat_at >= asked
        assert beat.grace_s == 3.0 and beat.ended is None  # the run's own grace, from the old beat
        time.sleep(1.2)  # warming up: still beating, so the master never sees it ownerless
        later = owner.read_beat(tmp_path / owner.OWNER_FILE)
        assert later is not None and later.beat_at > beat.beat_at
        assert owner.owner_gone(tmp_path / owner.OWNER_FILE, 3.0, since=asked) is None
    finally:
        assert heartbeat is not None
        heartbeat.pause()
    paused = owner.read_beat(tmp_path / owner.OWNER_FILE)
    time.sleep(0.8)
    assert owner.read_beat(tmp_path / owner.OWNER_FILE) == paused  # paused: not ended, the next try may take over
    assert paused is not None and paused.ended is None


@pytest.mark.parametrize("case", ["no checkpoint", "another run's checkpoint", "master gone", "beat stale",
                                  "load ended", "no beat"])
def test_nothing_to_take_over_writes_no_beat(tmp_path, master, case):
    if case != "no checkpoint":
        _checkpoint(tmp_path, master.pid, run_tag="another_run" if case == "another run's checkpoint" else RUN_TAG)
    if case == "master gone":
        master.kill()
        master.wait()
    if case != "no beat":
        _old_owner_beat(tmp_path, age_s=5.0 if case == "beat stale" else 1.0,
                        ended="complete" if case == "load ended" else None)
    before = (tmp_path / owner.OWNER_FILE).read_bytes() if case != "no beat" else None
    assert owner.beat_first(tmp_path, RUN_TAG) is None
    # a stale or ended beat is never revived: that master is stopping itself
    after = (tmp_path / owner.OWNER_FILE).read_bytes() if (tmp_path / owner.OWNER_FILE).exists() else None
    assert after == before


def test_the_task_beats_before_its_slow_imports():
    """In the Airflow task, the takeover beat comes before every other import and call but the plan's."""
    function = next(node for node in ast.parse(TASKS.read_text()).body
                    if isinstance(node, ast.FunctionDef) and node.name == "run_stages")
    lines = [ast.unparse(statement) for statement in function.body]
    assert lines[:3] == ["from stampede.steps.takeover import beat_first", "run_plan = _plan(plan)",
                         "heartbeat = beat_first(run_plan)"]


def test_the_first_beat_imports_nothing_slow(tmp_path, master):
    """A fresh interpreter (a new try) has beaten before it imports Locust, Airflow or the load step."""
    _checkpoint(tmp_path, master.pid)
    _old_owner_beat(tmp_path, age_s=1.0)
    code = ("import json, pathlib, sys, time; t0 = time.time(); import stampede.steps.takeover;"
            "from stampede.load import owner;"
            f"hb = owner.beat_first(pathlib.Path({str(tmp_path)!r}), {RUN_TAG!r});"
            "took = time.time() - t0; hb.pause();"
            "heavy = [m for m in ('locust', 'airflow', 'gevent', 'stampede.steps.run_stages') if m in sys.modules];"
            "print(json.dumps([took, heavy]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    took, heavy = json.loads(out.stdout.splitlines()[-1])
    assert heavy == [], out.stdout
    assert took < 2.0, f"the first beat took {took} s"
    print(f"first beat {took:.3f} s after the interpreter started importing")
