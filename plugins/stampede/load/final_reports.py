"""Ending the load without losing its last requests.

Locust's default stop kills users mid-request: the target served the request
but nobody recorded it, so the slowest requests of every stop vanish from the
percentiles and an entity created or deleted in that moment goes uncounted.
And a headless master quits half a second after it tells the workers to, so
whatever a worker recorded since its last 3-second report is lost too.

Stampede ends the load in three steps instead:

1. every user is told to stop in one pass (``end_every_user``): one in its think
   time is killed at once (it has nothing in flight), one mid-request finishes it
   (``GRACEFUL_STOP_S`` as Locust's stop timeout) and starts no other. Locust
   alone stops users one by one: at 15,000 users that took seconds, during which
   users whose think time ended sent some 12,000 more requests (1–2 s slow, the
   generator busy stopping the rest) that counted for the last stage;
2. the master asks every worker for a final report (``FLUSH_MESSAGE``); a worker
   sends it (``FINAL_MESSAGE``) once its last user has stopped;
3. the master quits when every live worker has reported, or after
   ``FINAL_REPORT_WAIT_S``, naming the workers whose last seconds are missing.

Loaded only through :mod:`stampede.load.plugin` (never imports Airflow).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import gevent
from locust.runners import STATE_MISSING
from locust.user.task import LOCUST_STATE_STOPPING, LOCUST_STATE_WAITING

logger = logging.getLogger("stampede")

GRACEFUL_STOP_S = 10.0
FINAL_REPORT_WAIT_S = GRACEFUL_STOP_S + 5.0  # after the load ended: the stop, then one message each way
FLUSH_MESSAGE = "stampede_flush"
FINAL_MESSAGE = "stampede_final"
SPAWN_WARNING = "Your selected spawn rate is very high"  # Locust's, for the instant ramp to 0 at the end


def use_graceful_stop(environment) -> None:
    """On the master or a standalone process: an explicit ``--stop-timeout`` wins; the master sends it on."""
    if not environment.stop_timeout:
        environment.stop_timeout = GRACEFUL_STOP_S


def end_every_user(runner) -> None:
    """In one pass, no switch in between: every user stops, and none starts another request.

    Marked stopping first, a user whose think time ends meanwhile stops instead of
    sending; one in its think time is also killed at once. Locust then waits for the
    users mid-request (its ``_state`` is private, but the only way to say "stopping").
    """
    for greenlet in list(runner.user_greenlets):
        user = greenlet.args[0] if greenlet.args else None
        if user is None:
            continue
        waiting = user._state == LOCUST_STATE_WAITING
        user._state = LOCUST_STATE_STOPPING
        if waiting:
            greenlet.kill(block=False)


def listen_on_worker(environment, drain: Callable[[], dict[str, Any]]) -> None:
    """On a worker: at the master's flush, end every user, then report everything once the last has stopped."""
    runner = environment.runner

    def on_flush(msg: Any = None, **_kw: Any) -> None:
        end_every_user(runner)  # the flush comes just before the master's spawn of 0 users
        deadline = time.time() + (environment.stop_timeout or 0.0) + 2.0
        while runner.user_count > 0 and time.time() < deadline:
            gevent.sleep(0.05)
        runner.send_message(FINAL_MESSAGE, drain())

    runner.register_message(FLUSH_MESSAGE, on_flush, concurrent=True)  # waits: not in the message loop


class FinalReports:
    """On the master: asks the workers for their final reports once, and knows when all have come."""

    def __init__(self, runner, add_report: Callable[[dict[str, Any]], None]) -> None:
        self.runner = runner
        self.add_report = add_report
        self.asked_at: float | None = None
        self.reported: set[str] = set()
        runner.register_message(FINAL_MESSAGE, self._on_final)
        logging.getLogger("locust.runners").addFilter(self._drop_spawn_warning_at_the_end)

    def _on_final(self, msg: Any, **_kw: Any) -> None:
        self.add_report(msg.data or {})
        self.reported.add(msg.node_id)

    def pending(self, now: float) -> bool:
        """Ask (the first time), then ``True`` while a live worker's final report is due."""
        if self.asked_at is None:
            self.asked_at = now
            self.runner.send_message(FLUSH_MESSAGE)
        missing = sorted(c.id for c in self.runner.clients.all if c.state != STATE_MISSING and c.id not in self.reported)
        if not missing:
            return False
        if now - self.asked_at < FINAL_REPORT_WAIT_S:
            return True
        logger.warning("stampede: no final report from worker(s) %s after %.0f s; their last seconds are not counted",
                       ", ".join(missing), FINAL_REPORT_WAIT_S)
        return False

    def _drop_spawn_warning_at_the_end(self, record: logging.LogRecord) -> bool:
        # the instant ramp to 0 users that ends the load is not a spawn rate the user chose
        return self.asked_at is None or not str(record.msg).startswith(SPAWN_WARNING)
