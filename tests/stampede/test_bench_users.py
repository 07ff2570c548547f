"""The users bench measures each level with the local workers a run of that many users gets."""

from __future__ import annotations

import os

from stampede.surfaces.bench import generators
from stampede.workers import local


def test_each_level_is_climbed_with_the_workers_its_own_run_would_get(monkeypatch):
    # a 2-core machine whose open-file hard limit leaves 500 users per load process
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(local, "users_per_process", lambda: 500)
    assert [local.default_worker_count(u) for u in (100, 300, 1000, 1001, 1600)] == [1, 2, 2, 3, 4]
    assert generators.worker_groups([100, 300, 500, 1000, 1001, 1400, 1600]) == [
        [100], [300, 500, 1000], [1001, 1400], [1600]]
    # the shipped climb on this project's machine (20,000 files: 19,800 users a process): 2 workers to 35,000
    monkeypatch.setattr(local, "users_per_process", lambda: 19_800)
    assert generators.worker_groups([1000, 5000, 30_000, 35_000, 40_000]) == [[1000, 5000, 30_000, 35_000], [40_000]]


def _level(window_s: float) -> generators.Level:
    return generators.Level(
        users=1000, rps=180.0, expected_rps=180.0, error_rate=0.0, worker_cpu_pct=[5.0, 5.0],
        worker_rss_mib=[70.0, 70.0], worker_wait_pct=[0.0, 0.0], master_cpu_pct=2.0, p95_ms=21.4,
        target={"p95_ms": 21.1}, window_s=window_s, settled={"spawned_after_s": 40.0, "planned_ramp_s": 12},
        workers=2)


def test_a_level_whose_users_never_all_ran_is_not_reached_and_not_held():
    # 50,000 users at 500/s on a saturated machine: all running 36 s into a 37 s level, so no settled window
    assert _level(0.0).reached is False and _level(0.0).held is False
    assert _level(17.0).reached is True and _level(17.0).held is True
