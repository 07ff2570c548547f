"""The master's fixed waits at the start and the end of a run, ended by what they wait for.

A headless Locust master with workers sleeps through two fixed waits of its own, each
a poll whose period is longer than what it waits for takes here (measured on the
smoke run: 5 users, one local worker, already running when the master starts):

- at the start it checks for ``--expect-workers`` ready workers, finds none (the
  first check runs before any worker's ``client_ready`` has arrived, ~0.1 s after
  the master binds) and sleeps a whole second before it looks again;
- at the end it quits up to three times (the shape's end, the shape greenlet's
  end, the shutdown), each time telling the workers to quit and sleeping half a
  second "for the final stats reports": 1.5 s after the load ended, though a
  worker answers its quit with its last report and its quit at once, and
  Stampede's own figures came in before (``stampede.load.final_reports``).

:func:`wait_for_workers` polls for the ready workers every 20 ms before Locust's loop
runs (bounded: past :data:`READY_POLL_S` Locust's own loop and its
``--expect-workers-max-wait`` take over, unchanged); :func:`quit_when_workers_quit`
makes the master's quit wait, at most as long as Locust's, until every worker it told
to quit has answered (its last stats report comes before its quit message), and
quit once. Loaded only through :mod:`stampede.load.plugin` (never imports Airflow).
"""

from __future__ import annotations

import time

import gevent
from locust.rpc import Message

POLL_S = 0.02
READY_POLL_S = 10.0  # the workers of a healthy run are ready within a second of the master's start
QUIT_WAIT_S = 0.5  # Locust's own wait for the workers' final stats (MasterRunner.quit)


def wait_for_workers(runner, expected: int, *, max_wait_s: float | None = None) -> bool:
    """Until ``expected`` workers are ready (their messages are served meanwhile); False when they are not.

    :param max_wait_s: ``--expect-workers-max-wait``; the poll never outlasts it, nor :data:`READY_POLL_S`.
    """
    limit = min(READY_POLL_S, max_wait_s) if max_wait_s else READY_POLL_S
    deadline = time.monotonic() + limit
    while len(runner.clients.ready) < expected:
        if time.monotonic() >= deadline:
            return False
        gevent.sleep(POLL_S)
    return True


def quit_when_workers_quit(runner) -> None:
    """Replace the master's ``quit`` by one that waits for the workers' answers, not half a second each time."""
    quitting: list[bool] = []

    def quit() -> None:
        if quitting:  # told the workers and waited for them already: end what is left at once
            runner.greenlet.kill(block=True)
            return
        quitting.append(True)
        runner.stop(send_stop_to_client=False)
        told = [client.id for client in runner.clients.all]
        for client_id in told:
            runner.server.send_to_client(Message("quit", None, client_id))
        deadline = time.monotonic() + QUIT_WAIT_S
        while any(client_id in runner.clients for client_id in told) and time.monotonic() < deadline:
            gevent.sleep(POLL_S)  # a worker's quit message comes after its final stats: both are in
        runner.greenlet.kill(block=True)

    runner.quit = quit
