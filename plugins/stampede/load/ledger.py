"""The ledger inside the Locust processes: workers record what is created, the master appends it to disk.

- **Workers** (and a standalone process) collect ledger records in their
  ``RequestRecorder``: from ``mark_created(environment, kind, id=..., url=...)``
  (the stock journeys, a team's locustfile) and from the scenario's ``creates``
  rules, matched by :class:`CreatesMatcher` on Locust's ``request`` event. The
  records ship to the master with the worker's reports.
- **The master** (``--stampede-ledger PATH``, given by the runner) appends the
  records of every report to that file and syncs it to disk once a second
  (:func:`flush`, from the aggregator's tick), so what a run created is on disk
  while the run goes, not at its end. A worker killed by SIGKILL loses at most
  the records of its last report interval (3 s); the search for the run tag
  finds those where the API can search.

The format is :mod:`stampede.cleanup.ledger`'s. Only the matcher runs per
request, and only requests whose method has a rule pay more than a dict lookup.
"""

from __future__ import annotations

import logging
import os
from typing import Any
from urllib.parse import urlsplit

from locust import events
from locust.runners import MasterRunner

from stampede.cleanup.ledger import LedgerEntry, encode_entries, encode_header
from stampede.plan.cleanup_declaration import parse_creates, value_at

logger = logging.getLogger("stampede")

REPORT_KEY = "ledger"  # the key of the records in a recorder's report


@events.init_command_line_parser.add_listener
def _add_argument(parser) -> None:
    parser.add_argument("--stampede-ledger", default="", include_in_web_ui=False,
                        help="Where the master appends the ledger of created entities")


# -- workers: what was created ------------------------------------------------------------------
class CreatesMatcher:
    """The scenario's ``creates`` rules on Locust's ``request`` event: a match becomes a ledger record.

    A rule matches on the request's method and name (how Locust reports it) or,
    when the name is something else, the path of its URL below the target's base
    path; then on the status. The id is read from the JSON body. A request the
    locustfile itself marked failed still created what its status says.
    """

    def __init__(self, environment, rules: list[dict[str, Any]], target: str) -> None:
        self.environment = environment
        self.base_path = urlsplit(target).path.rstrip("/")
        self.by_request: dict[tuple[str, str], list] = {}
        for rule in parse_creates(rules, _refuse):
            self.by_request.setdefault((rule.method, rule.path), []).append(rule)
        self.methods = {method for method, _ in self.by_request}
        self.unreadable = 0  # matched, but the body held no id: counted, never silent

    def on_request(self, request_type, name, response=None, url=None, **_kw) -> None:
        if request_type not in self.methods:
            return
        rules = self.by_request.get((request_type, name))
        if rules is None and url:
            path = urlsplit(str(url)).path
            if self.base_path and path.startswith(self.base_path):
                path = path[len(self.base_path):]
            rules = self.by_request.get((request_type, path))
        if rules is None or response is None:
            return
        status = getattr(response, "status_code", None)
        for rule in rules:
            if status in rule.status:
                self._record(rule, response)
                return

    def _record(self, rule, response) -> None:
        recorder = getattr(self.environment, "_stampede_recorder", None)
        if recorder is None:
            return
        entity_id = None
        try:
            entity_id = value_at(response.json(), rule.id)
        except Exception:  # noqa: BLE001 - a body that is not JSON: the entity is counted without an id
            pass
        if entity_id is None or isinstance(entity_id, (dict, list, bool)):
            self.unreadable += 1
            if self.unreadable == 1:
                logger.error("stampede: %s %s answered %s without an id at %r: counted, cleanup cannot delete it by id",
                             rule.method, rule.path, getattr(response, "status_code", "?"), rule.id)
            recorder.record(LedgerEntry(kind=rule.kind))
            return
        recorder.record(LedgerEntry(kind=rule.kind, id=str(entity_id),
                                    url=rule.entity_path.replace("{id}", str(entity_id))))


def setup_process(environment, plan: dict[str, Any]) -> None:
    """In a process with users: listen for the plan's ``creates`` rules (once; called at init and test start)."""
    rules = plan.get("creates") or []
    if not rules or isinstance(environment.runner, MasterRunner) or getattr(environment, "_stampede_creates", None):
        return
    matcher = CreatesMatcher(environment, rules, plan.get("target") or environment.host or "")
    environment._stampede_creates = matcher
    environment.events.request.add_listener(matcher.on_request)


def _refuse(field_name: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"creates: {field_name}: {problem}; fix: {fix}")


# -- the master: append to disk while the run goes ----------------------------------------------
class LedgerWriter:
    """Appends ledger records to one file; :meth:`flush` writes and syncs them (``os.fsync``)."""

    def __init__(self, path: str, *, header: bytes) -> None:
        self.path = path
        self.header = header
        self.pending: list[LedgerEntry] = []
        self.written = 0
        self._handle = None
        self._header_due = False

    def add(self, entries: list[LedgerEntry]) -> None:
        self.pending.extend(entries)

    def flush(self) -> None:
        if self._handle is None:
            self._handle = open(self.path, "ab")  # noqa: SIM115 - kept open for the run
            self._header_due = True  # on every (re)start: the reaper needs it even when nothing is created
        if not self.pending and not self._header_due:
            return
        try:
            self._handle.write((self.header if self._header_due else b"") + encode_entries(self.pending))
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:  # a full disk: keep the records and say so loudly every time
            logger.error("stampede: the ledger %s cannot be written (%s): %d created entities not on disk yet",
                         self.path, exc, len(self.pending))
            return
        self._header_due = False
        self.written += len(self.pending)
        self.pending = []

    def close(self) -> None:
        self.flush()
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def collect(aggregator, report: dict[str, Any]) -> None:
    """The master's share of a worker report (from ``RunAggregator.add_report``)."""
    records = report.get(REPORT_KEY)
    if not records:
        return
    writer = _writer(aggregator)
    if writer is not None:
        writer.add([LedgerEntry.from_wire(item) for item in records])


def flush(aggregator) -> None:
    """Once a second (from ``RunAggregator.tick``): what came in is written and synced."""
    writer = _writer(aggregator)
    if writer is not None:
        writer.flush()


def _writer(aggregator) -> LedgerWriter | None:
    writer = getattr(aggregator, "_stampede_ledger", None)
    if writer is not None:
        return writer
    options = aggregator.environment.parsed_options
    path = getattr(options, "stampede_ledger", "") if options else ""
    if not path:
        return None
    plan = aggregator.plan
    writer = LedgerWriter(path, header=encode_header(run_tag=plan.get("run_tag", ""), target=plan.get("target", ""),
                                                     cleanup=plan.get("cleanup")))
    aggregator._stampede_ledger = writer
    return writer


@events.quitting.add_listener
def _close(environment, **_kw: Any) -> None:
    """The last records, on disk. Locust fires ``quitting`` in reverse order of registration, so this
    listener, registered when the plugin imports this module, runs after the plugin's own, which adds
    the last reports (a standalone process's final drain) before it writes the results."""
    aggregator = getattr(environment, "_stampede_aggregator", None)
    writer = _writer(aggregator) if aggregator is not None else None
    if writer is not None:
        writer.close()
