"""Stampede's Locust plugin: stage shape, per-second histograms, stop and abort.

Loaded by Locust through ``-f stampede/locust_entry.py,<journeys>`` in the master,
the workers, or a standalone process; it never imports Airflow (gevent's
monkey-patching and Airflow do not mix in one process).

- Workers record every request into a histogram per (second, endpoint)
  (``stampede.load.recorder``) and ship them with Locust's own worker reports.
- The master plays the plan's stages (``stampede.load.shape``) and merges the
  workers' histograms exactly (``stampede.load.aggregator``), which also stops
  and aborts the load; at quit it writes everything to ``--stampede-out``.
- A team's locustfile reads the plan with :func:`plan_of` and records what it
  created with :func:`mark_created` (or declares it in the scenario's ``creates``
  rules: ``stampede.load.ledger``); the master keeps the run's ledger on disk.

The plan travels as a custom Locust argument, which Locust forwards from the
master to the workers, so cloud workers need no shared file system.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from typing import Any

import gevent
from locust import events
from locust.runners import MasterRunner, WorkerRunner

from stampede.core.stops import StopKind
from stampede.cleanup.ledger import LedgerEntry
from stampede.load import egress, ledger, open_model, owner_watch
from stampede.load.aggregator import RunAggregator
from stampede.load.final_reports import FinalReports, listen_on_worker, use_graceful_stop
from stampede.load.fixes import cooperative_spawning, no_redirects_by_default, patch_connection_pool, use_source_addresses
from stampede.load.loop_lag import LoopLagProbe
from stampede.load.master_waits import quit_when_workers_quit, wait_for_workers
from stampede.load.recorder import RequestRecorder
from stampede.load.shape import StageShape

__all__ = ["REPORT_KEY", "StageShape", "mark_created", "mark_deleted", "plan_of"]

logger = logging.getLogger("stampede")

REPORT_KEY = "stampede"


def plan_of(environment) -> dict[str, Any]:
    """The run plan (see ``stampede.plan.run_plan.LocustPlan``) that this process was given."""
    options = environment.parsed_options
    raw = getattr(options, "stampede_plan", None) if options else None
    cached = getattr(environment, "_stampede_plan", None)
    if cached is not None and cached[0] == raw:
        return cached[1]
    plan = json.loads(raw) if raw else {}
    environment._stampede_plan = (raw, plan)
    return plan


def mark_created(environment, kind: str, count: int = 1, *, id: object = None, url: str | None = None) -> None:  # noqa: A002
    """Record that this user created an entity: cleanup deletes exactly what is recorded, and proves it gone.

    :param kind: the kind of entity, as the scenario's ``cleanup.kinds`` names it (``showing``).
    :param id: its id, as the cleanup's ``{id}`` placeholder takes it; without one the entity is only
        counted, and only a search for the run tag can find it again.
    :param url: its path relative to the target's base URL (``/showings/17``), used to check it is gone
        where nothing else is declared.
    :param count: how many (id-less entities only).

    Journeys call it right after the create succeeds; a call in a process with
    no plan (a plain ``locust`` run) does nothing.
    """
    recorder = getattr(environment, "_stampede_recorder", None)
    if recorder is None:
        return
    if id is None:
        recorder.record(LedgerEntry(kind=kind, count=count))
    else:
        recorder.record(LedgerEntry(kind=kind, id=str(id), url=url))


def mark_deleted(environment, kind: str, *, id: object) -> None:  # noqa: A002
    """Record that this user deleted an entity the run created: cleanup will not delete that id again.

    An API may hand a freed id to a new entity (SQLite's rowids do), which by
    cleanup time may be someone else's.
    """
    recorder = getattr(environment, "_stampede_recorder", None)
    if recorder is not None:
        recorder.record(LedgerEntry(kind=kind, id=str(id), gone=True))


@events.init_command_line_parser.add_listener
def _add_arguments(parser) -> None:
    parser.add_argument("--stampede-plan", default="", include_in_web_ui=False, help="Stampede run plan (JSON)")
    parser.add_argument("--stampede-out", default="", include_in_web_ui=False, help="Where the master writes results")
    parser.add_argument("--stampede-stop-file", default="", include_in_web_ui=False, help="Stop when this file exists")
    parser.add_argument("--stampede-owner-file", default="", include_in_web_ui=False,
                        help="The owner's heartbeat: the load stops when it is older than the plan's owner_grace_s")


# A request allocates a few hundred short-lived objects (parsed JSON, headers, events), nearly all
# freed by reference counting; CPython's default gen-0 threshold (700) runs the cyclic collector
# hundreds of times a second at load, and each gen-2 pass walks every module, class and user.
# Fewer young collections, and the import-time objects frozen out of every pass.
GC_THRESHOLDS = (20_000, 20, 50)


def tune_gc() -> None:
    gc.collect()
    gc.freeze()  # modules, classes, the plan: never garbage, never scanned again
    gc.set_threshold(*GC_THRESHOLDS)


def _on_worker_test_start(environment, **_kw) -> None:
    plan = plan_of(environment)
    use_source_addresses(plan.get("local_ips") or ())  # before this worker's users are spawned
    _apply_journey_weights(environment, plan)


@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    egress.install(environment)  # first: only the addresses preflight approved (active since import, empty until now)
    no_redirects_by_default()
    patch_connection_pool()  # before any user connects; see stampede.load.fixes
    plan = plan_of(environment)
    use_source_addresses(plan.get("local_ips") or ())  # a worker's plan comes at test_start (below)
    runner = environment.runner
    if not plan and not isinstance(runner, WorkerRunner):
        return
    _apply_journey_weights(environment, plan)
    if isinstance(runner, MasterRunner):
        open_model.answer_rate_requests(environment)  # a worker that missed its stage's rate asks for it
    if not isinstance(runner, MasterRunner):
        tune_gc()  # a load-generating process: a worker or a standalone one
        cooperative_spawning()  # a big spawn message must not hold back the heartbeat (stampede.load.fixes)
        recorder = RequestRecorder()
        recorder.environment = environment
        recorder.loop_lag = LoopLagProbe().start()  # the generator's own delay, beside its requests
        environment._stampede_recorder = recorder
        environment.events.request.add_listener(recorder.on_request)
    if isinstance(runner, WorkerRunner):
        open_model.listen(environment)
        # a worker learns the plan with the master's first spawn message, just before test_start
        environment.events.test_start.add_listener(_on_worker_test_start)

        def report(client_id, data):
            data[REPORT_KEY] = environment._stampede_recorder.drain()

        environment.events.report_to_master.add_listener(report)
        listen_on_worker(environment, environment._stampede_recorder.drain)
        owner_watch.watch_worker(environment, plan_of)  # the kill switch, a silent master: this worker stops itself
        return

    use_graceful_stop(environment)
    aggregator = RunAggregator(environment, plan)
    environment._stampede_aggregator = aggregator
    if isinstance(runner, MasterRunner):
        aggregator.final_reports = FinalReports(runner, aggregator.add_report)
        quit_when_workers_quit(runner)  # not half a second each of the three times a headless master quits

        def on_worker_report(client_id, data):
            if REPORT_KEY in data:
                aggregator.add_report(data[REPORT_KEY])

        environment.events.worker_report.add_listener(on_worker_report)

    watch = owner_watch.MasterWatch(environment, aggregator, plan)  # the owner's beat and the kill switch

    def ticker() -> None:
        while True:
            gevent.sleep(1.0 - (time.time() % 1.0))
            recorder = getattr(environment, "_stampede_recorder", None)
            if recorder is not None:  # standalone: this process is its own worker
                aggregator.add_report(recorder.drain())
            try:
                watch.check()
            except Exception:  # noqa: BLE001 - never silently: a watch that cannot judge stops the load
                logger.exception("stampede: owner watch failed")
                aggregator.request_stop("the owner watch failed (see master.log)", kind=StopKind.OWNER_LOST)
            try:
                aggregator.tick(time.time())
            except Exception:  # a bug here must not kill the load loop's safety checks silently
                logger.exception("stampede: tick failed")

    gevent.spawn(ticker)

    @environment.events.quitting.add_listener
    def _write(environment, **_kw) -> None:
        recorder = getattr(environment, "_stampede_recorder", None)
        if recorder is not None:
            aggregator.add_report(recorder.drain())
        # The run can end between two ticks for the same reason the ticker would have
        # recorded (its last worker's agent saw the stale beat first): judge it once more,
        # so a load its owner lost is never written as a complete run.
        if aggregator.load_ended is None:  # a run that played its plan out ended for that reason
            try:
                watch.check()
            except Exception:  # noqa: BLE001
                logger.exception("stampede: owner watch failed at the end of the run")
        out = environment.parsed_options.stampede_out
        if out:
            aggregator.write(out)
        if aggregator.stop_reason and aggregator.stop_reason.get("kind") == StopKind.ABORT:
            environment.process_exit_code = 1

    options = environment.parsed_options
    if isinstance(runner, MasterRunner) and options is not None and getattr(options, "expect_workers", 0):
        # last, once all is set up: before Locust's own check, which sleeps a whole second when it finds
        # the workers not ready yet (they are, a tenth of a second after the master binds)
        wait_for_workers(runner, options.expect_workers, max_wait_s=options.expect_workers_max_wait)


def _apply_journey_weights(environment, plan: dict[str, Any]) -> None:
    weights: dict[str, float] = plan.get("journeys") or {}
    for user_class in environment.user_classes:
        key = getattr(user_class, "journey", None)
        weight = weights.get(user_class.__name__, weights.get(key) if key else None)
        if weight is not None:
            # Locust wants integer weights; keep the ratio to 0.1 % precision
            user_class.weight = max(0, round(float(weight) * 10))
    think = plan.get("think_time_s")
    if think:
        from locust import between

        for user_class in environment.user_classes:
            if getattr(user_class, "stampede_think_time", True):
                user_class.wait_time = between(float(think[0]), float(think[1]))
    open_model.setup_process(environment, plan)  # open model: users wait for their planned start instead
    ledger.setup_process(environment, plan)  # the scenario's creates rules record what requests create
