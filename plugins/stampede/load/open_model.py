"""The open model inside Locust: iterations start at an arrival rate, not when a user is ready.

Like k6's constant- and ramping-arrival-rate executors. Every load-generating
process (each worker, or the single standalone process) runs one scheduler
greenlet that plans iteration starts at its share of the stage's rate (rate / N
workers), linearly from ``start_rate`` to ``rate`` over the stage. The stage's
users are a pre-allocated pool: each one waits (instead of thinking) until the
scheduler hands it a planned start, then runs one task (one iteration). When an
iteration is due and every user is busy, it is *dropped and counted*, never
started late: so a slow target cannot slow the arrivals down (no coordinated
omission), and the latency recorded is that of requests sent on schedule.

The master tells the processes each stage's rate with a custom Locust message;
the processes count started and dropped iterations per second and ship the
counts with their reports; the master sums them per stage and phase.

Loaded only through :mod:`stampede.load.plugin` (never imports Airflow).
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Mapping
from typing import Any

import gevent
from gevent.event import AsyncResult
from locust.user.task import LOCUST_STATE_RUNNING, LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

logger = logging.getLogger("stampede")

MESSAGE = "stampede_rate"
# A worker asks for the current stage's rate once it listens: the master counts a worker as soon as it
# connects, before the worker's init has registered MESSAGE, and Locust drops a message of an unknown
# type ("Unknown message type received: stampede_rate", seen in CI: that worker then started no
# iterations at all and the stage ran at half its rate).
RATE_REQUEST = "stampede_rate_request"
REPORT_KEY = "iterations"
IDLE_POLL_S = 0.05  # when the rate is zero: how often to look again


class OpenModelScheduler:
    """Per process: hands planned iteration starts to idle users; counts started and dropped ones."""

    def __init__(self) -> None:
        self.idle: deque[AsyncResult] = deque()
        self.counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])  # second -> [started, dropped]
        self.greenlet: gevent.Greenlet | None = None
        self.stage: tuple[float, ...] | None = None  # the stage being scheduled: its message's figures

    # -- users --------------------------------------------------------------------
    def wait_for_slot(self) -> float:
        """Block the calling user until its next planned start; return 0 (no think time)."""
        slot = AsyncResult()
        self.idle.append(slot)
        try:
            slot.get()
        except BaseException:
            # killed while waiting (the stage ended): never hand this slot out
            if slot in self.idle:
                self.idle.remove(slot)
            raise
        return 0.0

    # -- stages -------------------------------------------------------------------
    def start_stage(self, *, start_rate: float, rate: float, duration_s: float, share: float, t0: float) -> None:
        stage = (start_rate, rate, duration_s, share, t0)
        if stage == self.stage and self.greenlet is not None:
            return  # the same stage twice (its message and the answer to this worker's request): one schedule
        self.stop()
        self.stage = stage
        self.greenlet = gevent.spawn(self._run, start_rate * share, rate * share, duration_s, t0)

    def stop(self) -> None:
        self.stage = None
        if self.greenlet is not None:
            self.greenlet.kill(block=False)
            self.greenlet = None

    def _run(self, start_rate: float, end_rate: float, duration_s: float, t0: float) -> None:
        planned = t0
        while True:  # until the next stage's rate or the stop (Locust's stage may outlast duration_s by a tick)
            fraction = min(1.0, max(0.0, (planned - t0) / duration_s)) if duration_s > 0 else 1.0
            rate = start_rate + (end_rate - start_rate) * fraction
            if rate <= 0:
                planned += IDLE_POLL_S
                gevent.sleep(max(0.0, planned - time.time()))
                continue
            delay = planned - time.time()
            if delay > 0:
                gevent.sleep(delay)
            self._dispatch(planned)
            planned += 1.0 / rate

    def _dispatch(self, planned: float) -> None:
        bucket = self.counts[int(planned)]
        while self.idle:
            slot = self.idle.popleft()
            if not slot.ready():
                slot.set(planned)
                bucket[0] += 1
                return
        bucket[1] += 1  # every user busy: dropped, like k6's dropped_iterations

    def drain(self) -> dict[str, list[int]]:
        counts, self.counts = self.counts, defaultdict(lambda: [0, 0])
        return {str(sec): list(pair) for sec, pair in counts.items()}


def gate_users(environment, scheduler: OpenModelScheduler) -> None:
    """Users wait for the scheduler instead of thinking, also before their first task."""
    def wait_time(_user) -> float:
        return scheduler.wait_for_slot()

    for user_class in environment.user_classes:
        user_class.wait_time = wait_time
        if not getattr(user_class, "_stampede_gated", False):
            original = user_class.on_start

            def on_start(self, _original=original):
                _original(self)
                # waiting, as in a think time, so a graceful stop ends this user at once, not after
                # the whole stop timeout; one already asked to stop is stopped before its first task
                if self._state != LOCUST_STATE_STOPPING:
                    self._state = LOCUST_STATE_WAITING
                    scheduler.wait_for_slot()
                    self._state = LOCUST_STATE_RUNNING

            user_class.on_start = on_start
            user_class._stampede_gated = True


def stage_message(stage: dict[str, Any], workers: int, now: float) -> dict[str, Any]:
    """What the master sends every process when a stage starts: the rate and this process's share."""
    rate = float(stage.get("rate") or 0.0)
    start = stage.get("start_rate")
    return {
        "start_rate": rate if start is None else float(start), "rate": rate,
        "duration_s": float(stage["duration_s"]), "share": 1.0 / max(1, workers), "t0": now,
    }


class IterationCounts:
    """Master side: started and dropped iterations per second, summed per stage and phase.

    The per-second counts are what the rolling windows of the open model's thresholds read, so only
    the recent ones are kept: :meth:`settle` folds older seconds into their stage and phase once for
    all (a day held 86,400 of them, ~10 MiB, and ``by_phase`` walked them all every checkpoint).
    """

    def __init__(self) -> None:
        self.per_second: dict[int, list[int]] = defaultdict(lambda: [0, 0])
        self.settled: dict[str, list[int]] = {}  # "<stage>/<phase>" -> [started, dropped] of the settled seconds
        self.settled_before: int | None = None  # every second before it is in ``settled``

    def add(self, counts: dict[str, list[int]] | None, timeline: Mapping[int, tuple[int, str, int]] | None = None) -> None:
        for sec, (started, dropped) in (counts or {}).items():
            second = int(sec)
            if self.settled_before is not None and second < self.settled_before:  # a late report: straight to its phase
                self._settle_one(second, started, dropped, timeline or {})
                continue
            slot = self.per_second[second]
            slot[0] += started
            slot[1] += dropped

    def settle(self, before: int, timeline: Mapping[int, tuple[int, str, int]]) -> None:
        """Fold every second before ``before`` into its stage and phase (a second never tagged counts for none)."""
        for sec in [s for s in self.per_second if s < before]:
            started, dropped = self.per_second.pop(sec)
            self._settle_one(sec, started, dropped, timeline)
        self.settled_before = max(before, self.settled_before or before)

    def _settle_one(self, sec: int, started: int, dropped: int, timeline: Mapping[int, tuple[int, str, int]]) -> None:
        entry = timeline.get(sec)
        if entry is not None:
            slot = self.settled.setdefault(f"{entry[0]}/{entry[1]}", [0, 0])
            slot[0] += started
            slot[1] += dropped

    def by_phase(self, timeline: Mapping[int, tuple[int, str, int]]) -> dict[str, list[int]]:
        """``{"<stage>/<phase>": [started, dropped]}`` over the seconds the load ran (tagged seconds only)."""
        result: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        for key, (started, dropped) in self.settled.items():
            result[key][0] += started
            result[key][1] += dropped
        for sec, (started, dropped) in self.per_second.items():
            entry = timeline.get(sec)
            if entry is None:
                continue
            slot = result[f"{entry[0]}/{entry[1]}"]
            slot[0] += started
            slot[1] += dropped
        return dict(result)


# -- the hooks locust_plugin calls (one line each there) -------------------------------
def scheduler_of(environment) -> OpenModelScheduler:
    scheduler = getattr(environment, "_stampede_scheduler", None)
    if scheduler is None:
        scheduler = environment._stampede_scheduler = OpenModelScheduler()
    return scheduler


def setup_process(environment, plan: dict[str, Any]) -> None:
    """In a load-generating process of an open-model run: users wait for the scheduler."""
    if plan.get("model") == "open":
        gate_users(environment, scheduler_of(environment))


def listen(environment) -> None:
    """On a worker, from init (the first rate can arrive before the plan does): start and stop stages."""
    scheduler = scheduler_of(environment)

    def on_rate(msg, **_kw) -> None:
        data = msg.data or {}
        if data.get("stop"):
            scheduler.stop()
        else:
            scheduler.start_stage(**data)

    environment.runner.register_message(MESSAGE, on_rate)
    environment.events.test_stop.add_listener(lambda **_kw: scheduler.stop())
    environment.runner.send_message(RATE_REQUEST)  # a rate sent before this point was dropped


def answer_rate_requests(environment) -> None:
    """On the master: a worker that asks gets the running stage's rate message (nothing between stages)."""
    def on_request(msg, **_kw) -> None:
        current = getattr(environment, "_stampede_open_stage", None)
        if current is not None:
            environment.runner.send_message(MESSAGE, current, client_id=msg.node_id)

    environment.runner.register_message(RATE_REQUEST, on_request)


def stage_started(environment, plan: dict[str, Any], stage: dict[str, Any], now: float) -> None:
    """On the master (or standalone process) when a stage starts: every process gets its share of the rate."""
    if plan.get("model") != "open":
        return
    from locust.runners import MasterRunner

    runner = environment.runner
    if isinstance(runner, MasterRunner):
        message = environment._stampede_open_stage = stage_message(stage, runner.worker_count, now)
        runner.send_message(MESSAGE, message)
    else:
        scheduler_of(environment).start_stage(**stage_message(stage, 1, now))


def load_ended(environment, plan: dict[str, Any]) -> None:
    if plan.get("model") != "open":
        return
    from locust.runners import MasterRunner

    runner = environment.runner
    if isinstance(runner, MasterRunner):
        environment._stampede_open_stage = None
        runner.send_message(MESSAGE, {"stop": True})
    else:
        scheduler_of(environment).stop()


def drain(environment) -> dict[str, list[int]]:
    scheduler = getattr(environment, "_stampede_scheduler", None)
    return scheduler.drain() if scheduler is not None else {}
