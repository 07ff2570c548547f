"""Inside every Locust process: stop the load when its owner is gone or the kill switch is on.

No supervisor is trusted to be alive (``stampede.load.owner``):

- the master (or a standalone process) reads the owner's beat and the kill switch
  once a second; a stale beat stops the load with kind ``owner_lost``, an owner that
  ended the load on purpose with ``stopped``, the switch with ``kill_switch``. For
  ``owner_lost`` and ``stopped`` it tells its workers that the run is over for good
  (they stop their users now and exit with ``OWNER_LOST_EXIT``, so no agent starts
  another worker);
- a worker reads the kill switch of its own host: it stops its users at once and tells
  its master, which stops the run with kind ``kill_switch`` (a worker that quit instead
  would leave a master whose last worker is gone, which ends the run as if complete);
  when its master has been silent for the plan's grace (or :data:`MASTER_SILENT_S`, if
  shorter: a master that died or was killed) it stops its users and quits, with an exit
  code that lets its agent start a fresh worker (the silence counts from the end of the
  worker's own last stall, :data:`OWN_STALL_S`: a worker whose loop was held up reads the
  master's queued beats only after it, and would otherwise leave a live master): an idle worker sends no load, and a
  master the owner started again (``stampede.load.runner``) finds its workers that way.
  A worker of a run that is over for good is ended by its agent (the owner's beat, its
  time to live, teardown's stop file) or by the master's "run over".

Loaded only through :mod:`stampede.load.plugin` (never imports Airflow).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import gevent
from locust.runners import MasterRunner

from stampede.core.stops import StopKind
from stampede.load.final_reports import end_every_user
from stampede.load.owner import OWNER_LOST_EXIT, owner_gone
from stampede.plan.scenario import DEFAULT_OWNER_GRACE_S
from stampede.safety import killswitch

logger = logging.getLogger("stampede")

RUN_OVER_MESSAGE = "stampede_run_over"  # master → workers: the run is over for good
KILL_SWITCH_MESSAGE = "stampede_kill_switch"  # worker → master: the kill switch is on where the worker runs
# Locust's master beats to its workers every second; silent this long, it is gone (its own timeout is 60 s)
MASTER_SILENT_S = 10.0
OWN_STALL_S = 1.0  # the watch's one-second sleep this much late: the worker's own loop was held up


def grace_of(plan: dict[str, Any]) -> float:
    return float(plan.get("owner_grace_s") or DEFAULT_OWNER_GRACE_S)


class MasterWatch:
    """On the master or a standalone process: polled once a second by the plugin's ticker."""

    def __init__(self, environment, aggregator, plan: dict[str, Any]) -> None:
        self.environment = environment
        self.aggregator = aggregator
        self.grace_s = grace_of(plan)
        path = getattr(environment.parsed_options, "stampede_owner_file", "") or ""
        self.owner_file = Path(path) if path else None
        self.since = time.time()
        self.told_workers = False
        if isinstance(environment.runner, MasterRunner):
            environment.runner.register_message(KILL_SWITCH_MESSAGE, self._on_worker_kill_switch)

    def _on_worker_kill_switch(self, msg: Any = None, **_kw: Any) -> None:
        reason = str(getattr(msg, "data", None) or "kill switch: on at a worker")
        self.aggregator.request_stop(reason, kind=StopKind.KILL_SWITCH)

    def check(self) -> None:
        if self.aggregator.stop_reason is None:
            why = killswitch.local_reason()
            if why:
                self.aggregator.request_stop(why, kind=StopKind.KILL_SWITCH)
            elif self.owner_file is not None:
                request = owner_gone(self.owner_file, self.grace_s, since=self.since)
                if request is not None:
                    self.aggregator.request_stop(request.reason, kind=request.kind)
        stopped = self.aggregator.stop_reason
        if stopped and not self.told_workers and stopped.get("kind") in (StopKind.OWNER_LOST, StopKind.STOPPED):
            self.told_workers = True
            runner = self.environment.runner
            if isinstance(runner, MasterRunner):
                runner.send_message(RUN_OVER_MESSAGE)


def watch_worker(environment, plan_of) -> None:
    """On a worker: the kill switch of this host, a silent master, and the master's "run over"."""
    runner = environment.runner

    def run_over(reason: str, *, for_good: bool = True) -> None:
        logger.warning("stampede: %s; this worker stops%s", reason, " and does not come back" if for_good else "")
        environment.process_exit_code = OWNER_LOST_EXIT if for_good else 0
        end_every_user(runner)

    def on_run_over(msg: Any = None, **_kw: Any) -> None:
        run_over("the master says the run is over (its owner is gone or stopped it)")

    runner.register_message(RUN_OVER_MESSAGE, on_run_over)

    def loop() -> None:
        told = False
        resumed_at = time.time()  # the end of this worker's own last stall
        while True:
            asked = time.time()
            gevent.sleep(1.0)
            if time.time() - asked > 1.0 + OWN_STALL_S:
                resumed_at = time.time()
            why = killswitch.local_reason()
            if why:  # no request more from here; the master stops the run and records why
                if not told:
                    told = True
                    run_over(why)
                    runner.send_message(KILL_SWITCH_MESSAGE, why)
                end_every_user(runner)  # also any user the master spawned before it heard
            last_beat = runner.last_heartbeat_timestamp
            silent_s = time.time() - max(last_beat, resumed_at) if last_beat else 0.0
            limit_s = min(grace_of(plan_of(environment)), MASTER_SILENT_S)
            if silent_s > limit_s:
                run_over(f"no heartbeat from the master for {silent_s:.0f} s (limit {limit_s:g} s)", for_good=False)
                runner.quit()
                return

    gevent.spawn(loop)
