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
