"""Generator health: was the load generator itself the limit?

Sampled from outside Locust once a second (``stampede.load.runner``): CPU,
memory and the time each generator process waited for a core. A stage during
which a generator *sat* above the limit is invalid: its figures measure the
generator, not the target.
"""

from __future__ import annotations

import dataclasses
import math
import operator
import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from stampede.core.records import GeneratorHealth, GeneratorSample

DEFAULT_CPU_LIMIT_PCT = 85.0
# A stage's p95 event-loop lag above this (ms) is added to every response timed in that loop:
# the generator's delay, not the target's, is in the latency. 10 ms: well under the 16 ms of
# distortion a run was once called valid with (issue 18), and above the few ms a wake-up waits
# for a core on a machine shared with other work, so a busy CI machine is not called a delayed generator.
DEFAULT_LOOP_LAG_LIMIT_MS = 10.0
SATURATION_WINDOW = 5  # consecutive samples (~1 s apart): a generator must *sit* above the limit


def generator_health(
    samples: Iterable[GeneratorSample | Mapping[str, Any]], stages: list[dict], limit_pct: float | None = None,
    lag_limit_ms: float | None = None,
) -> tuple[GeneratorHealth, set[int]]:
    """Peak CPU/memory of the generators while load ran, and the stages during which one sat above the limit.

    A generator is saturated when what it *wanted* (CPU used plus run-queue wait:
    runnable but no core free) sat above the limit for ``SATURATION_WINDOW``
    consecutive samples. CPU use alone misses a starved generator: sharing a core,
    it gets half of it and shows ~50 % while every timer it sets fires late.

    A generator is *delayed* in a stage whose event-loop lag p95 (measured inside
    the Locust processes, ``stampede.load.loop_lag``; in the stage's output) sat
    above ``lag_limit_ms``: neither busy nor starved, its loop still answered late,
    so every latency it timed there holds that delay. Those stages are returned too.

    :param samples: records, or ``generator_samples.json``'s rows as they are (a day is 260,000 rows:
        judged as columns, without a record per row).
    """
    limit = limit_pct if limit_pct is not None else float(os.environ.get("STAMPEDE_GENERATOR_CPU_LIMIT", DEFAULT_CPU_LIMIT_PCT))
    spans = [(i, s["start"], s["end"]) for i, s in enumerate(stages) if s.get("start") is not None and s.get("end")]
    columns = _columns(samples)
    t = columns["t"]
    inside = np.zeros(len(t), dtype=bool)
    for _, start, end in spans:
        inside |= (t >= start) & (t <= end)
    cpu_max = mem_max = demand_max = 0.0
    saturated_stages: set[int] = set()
    pids = columns["pid"][inside]
    workers = 0
    for pid in np.unique(pids):
        mine = np.flatnonzero(inside & (columns["pid"] == pid))
        mine = mine[np.argsort(t[mine], kind="stable")]
        workers += bool(columns["worker"][mine[0]])
        mem_max = max(mem_max, float(columns["rss_mib"][mine].max()))
        if len(mine) < SATURATION_WINDOW:
            continue
        # the level each process *sat* at over every window of consecutive samples
        cpus = sliding_window_view(columns["cpu_pct"][mine], SATURATION_WINDOW).min(axis=1)
        demands = sliding_window_view(columns["cpu_pct"][mine] + columns["wait_pct"][mine], SATURATION_WINDOW).min(axis=1)
        cpu_max = max(cpu_max, float(cpus.max()))
        demand_max = max(demand_max, float(demands.max()))
        for last in t[mine][SATURATION_WINDOW - 1:][demands > limit]:
            saturated_stages.update(idx for idx, start, end in spans if start <= last <= end)
    processes = len(np.unique(pids))
    generators = workers or (1 if processes else 0)  # the workers, or the single standalone process
    lag_limit = lag_limit_ms if lag_limit_ms is not None else float(
        os.environ.get("STAMPEDE_GENERATOR_LAG_LIMIT_MS", DEFAULT_LOOP_LAG_LIMIT_MS))
    lags = {i: s["loop_lag_p95_ms"] for i, s in enumerate(stages) if s.get("loop_lag_p95_ms") is not None}
    delayed_stages = {i for i, lag in lags.items() if lag > lag_limit}
    lag_max = max(lags.values(), default=None)
    recommended = recommended_workers(generators, demand_max, limit, saturated=bool(saturated_stages))
    advice = _advice(generators, demand_max, limit, recommended) if saturated_stages else ""
    if delayed_stages and not saturated_stages:
        advice = _lag_advice(lag_max or 0.0, lag_limit)
    health = GeneratorHealth(
        cpu_max_pct=round(cpu_max, 1), memory_max_mib=round(mem_max, 1),
        saturated=bool(saturated_stages | delayed_stages), limit_pct=limit, processes=processes,
        demand_max_pct=round(demand_max, 1), workers=generators, recommended_workers=recommended,
        advice=advice, loop_lag_p95_ms=None if lag_max is None else round(lag_max, 2),
        loop_lag_limit_ms=lag_limit, delayed=bool(delayed_stages),
    )
    return health, saturated_stages | delayed_stages


def _columns(samples: Iterable[GeneratorSample | Mapping[str, Any]]) -> dict[str, np.ndarray]:
    rows = [s if isinstance(s, Mapping) else dataclasses.asdict(s) for s in samples]
    numbers = np.array(list(map(_NUMBERS, rows)), dtype=float).reshape(-1, 4)  # one pass for the fields every row has
    return {
        "t": numbers[:, 0],
        "pid": numbers[:, 1].astype(np.int64),
        "worker": np.array([r["role"] == "worker" for r in rows], dtype=bool),
        "cpu_pct": numbers[:, 2],
        "rss_mib": numbers[:, 3],
        "wait_pct": np.array([r.get("wait_pct", 0.0) or 0.0 for r in rows], dtype=float),
    }


_NUMBERS = operator.itemgetter("t", "pid", "cpu_pct", "rss_mib")


HEADROOM = 0.75  # plan each generator at three quarters of the limit


def recommended_workers(generators: int, demand_pct: float, limit_pct: float, *, saturated: bool) -> int | None:
    """Worker processes that would carry the same load with each under ``HEADROOM`` × the limit.

    A saturated generator's demand is capped by the core it had, so the true demand is
    at least what was measured; at least one more worker is recommended then.
    """
    if generators <= 0 or demand_pct <= 0 or limit_pct <= 0:
        return None
    needed = math.ceil(generators * demand_pct / (HEADROOM * limit_pct))
    return max(needed, generators + 1) if saturated else max(1, needed)


def _lag_advice(lag_ms: float, limit_ms: float) -> str:
    return (
        f"the load generator, not the target, was the limit: its event loop answered {lag_ms:.1f} ms late at p95 "
        f"(limit {limit_ms:.0f} ms) though its CPU was under the limit, so every latency it timed holds that delay; "
        "look for code in the locustfile that blocks without yielding (an unpatched library, a long computation), "
        "or use more workers, then run again"
    )


def _advice(generators: int, demand_pct: float, limit_pct: float, recommended: int | None) -> str:
    more = (recommended or generators + 1) - generators
    cores = os.cpu_count() or 1
    text = (
        f"the load generator, not the target, was the limit: a generator sat at {demand_pct:.0f}% of a core "
        f"(limit {limit_pct:.0f}%); these figures measure the generator. Use {recommended} workers "
        f"({more} more than {generators})"
    )
    if recommended and recommended > cores:
        text += f" on more cores or machines (this one has {cores})"
    return text + ", then run again"
