"""The worker's side of a run: every request into a histogram of its second and endpoint, and what was created.

A standalone process records into its own aggregator; a worker drains the
buffer into each report it sends the master (Locust's ``report_to_master``).
Created entities (``mark_created``, the scenario's ``creates`` rules) go into
the same report as ledger records (``stampede.load.ledger``), so they reach the
master's ledger file within one report interval.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from stampede.cleanup.ledger import LedgerEntry
from stampede.core.histogram import LatencyHistogram
from stampede.load import ledger, open_model
from stampede.load.loop_lag import LoopLagProbe


LOOP_LAG_KEY = "loop_lag"  # {second: lag histogram} in a report


class RequestRecorder:
    """Per-process buffer: {second: {endpoint: [histogram counts, failures, {error: n}]}}."""

    def __init__(self) -> None:
        self.buffer: dict[int, dict[str, list]] = {}
        self.created: dict[str, int] = defaultdict(int)
        self.ledger: list[list[Any]] = []  # created entities, as ledger records on the wire
        self.environment = None  # set by _on_init: the open model's iteration counts ship with the requests
        self.loop_lag: LoopLagProbe | None = None  # set by _on_init: this process's event-loop lag ships too

    def on_request(self, request_type, name, response_time, response_length, exception=None, **_kw) -> None:
        second = int(time.time())
        per_endpoint = self.buffer.get(second)
        if per_endpoint is None:
            per_endpoint = self.buffer[second] = {}
        key = f"{request_type} {name}"
        entry = per_endpoint.get(key)
        if entry is None:
            entry = per_endpoint[key] = [LatencyHistogram(), 0, {}]
        entry[0].record_ms(response_time or 0.0)
        if exception is not None:
            entry[1] += 1
            message = _error_text(exception)
            entry[2][message] = entry[2].get(message, 0) + 1

    def record(self, entry: LedgerEntry) -> None:
        """One created entity (or ``entry.count`` of them without an id), or one the run deleted itself."""
        if not entry.gone:
            self.created[entry.kind] += entry.count
        self.ledger.append(entry.to_wire())

    def drain(self) -> dict[str, Any]:
        buffer, self.buffer = self.buffer, {}
        created, self.created = dict(self.created), defaultdict(int)
        records, self.ledger = self.ledger, []
        return {
            ledger.REPORT_KEY: records,
            "seconds": {
                str(sec): {ep: [e[0].to_dict(), e[1], e[2]] for ep, e in endpoints.items()}
                for sec, endpoints in buffer.items()
            },
            "created": created,
            open_model.REPORT_KEY: open_model.drain(self.environment) if self.environment is not None else {},
            LOOP_LAG_KEY: self.loop_lag.drain() if self.loop_lag is not None else {},
        }


def _error_text(exception: BaseException) -> str:
    text = f"{type(exception).__name__}: {exception}"
    return text[:200]
