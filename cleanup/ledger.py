"""The ledger of what a run created: one JSON line per entity, appended by the Locust master while the run goes.

Every entity a run creates is recorded as it is created: by the stock journeys,
by a team's locustfile through ``mark_created(environment, kind, id=..., url=...)``,
or with no code by the scenario's ``creates`` rules. Workers ship the records
to the master with their reports; the master appends them to ``ledger.jsonl``
in the run folder and syncs the file to disk once a second
(``stampede.load.ledger``). Cleanup then deletes exactly these entities, so its
work is proportional to what was created, and the reaper can finish the job of
a run whose cleanup never ran: the file's header names the run tag, the target
and the run's cleanup declaration.

Lines::

    {"ledger": 1, "run_tag": "LT-…", "target": "http://…/v1", "cleanup": {…}}   header (first, and after a restart)
    {"k": "showing", "id": "17", "url": "/showings/17"}                          an entity
    {"k": "showing", "id": "17", "gone": 1}                                      the run deleted it itself
    {"k": "order", "n": 3}                                                      created without an id: counted only

``created`` counts creations, not ids: an API that hands a freed id to a new
entity (SQLite's rowids, json-server's largest-plus-one) gives the run the same
id twice. An id the run deleted itself is not deleted again by cleanup (its id
may belong to someone else's entity by then), unless the run created it again
later. A line torn by a SIGKILL mid-write (the last one) is skipped and counted.
Stdlib only: it is imported by the Locust processes too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["LEDGER_VERSION", "Ledger", "LedgerEntry", "encode_entries", "encode_header", "read_ledger"]

LEDGER_VERSION = 1


@dataclass(frozen=True)
class LedgerEntry:
    """One entity a run created: its kind, its id (``None``: counted only) and its path on the target."""

    kind: str
    id: str | None = None
    url: str | None = None
    count: int = 1  # > 1 only for entities counted without an id
    gone: bool = False  # the run deleted it itself (a journey's own delete)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.id or "")

    def to_wire(self) -> list[Any]:
        """What a worker ships to the master (a list: smaller than a mapping)."""
        return [self.kind, self.id, self.url, self.count, self.gone]

    @classmethod
    def from_wire(cls, item: list[Any]) -> LedgerEntry:
        kind, entity_id, url, count, gone = (list(item) + [None, None, 1, False])[:5]
        return cls(kind=str(kind), id=None if entity_id is None else str(entity_id),
                   url=None if url is None else str(url), count=int(count or 1), gone=bool(gone))


@dataclass
class Ledger:
    """What a run's ledger files hold: the entities it left (by id), the ones it deleted itself, the header."""

    entities: dict[tuple[str, str], LedgerEntry] = field(default_factory=dict)  # created, not deleted by the run
    deleted_by_run: dict[tuple[str, str], LedgerEntry] = field(default_factory=dict)
    counted: dict[str, int] = field(default_factory=dict)  # kind -> created without an id
    creations: dict[str, int] = field(default_factory=dict)  # kind -> every creation recorded
    run_tag: str = ""
    target: str = ""
    cleanup: Any = None  # the run's cleanup declaration (its to_dict form), from the header
    files: int = 0
    torn_lines: int = 0  # unreadable lines (a write cut by a kill): skipped

    @property
    def created(self) -> int:
        return sum(self.creations.values())

    def kinds(self) -> dict[str, int]:
        """Creations per kind (with and without ids)."""
        return dict(self.creations)

    def add(self, entry: LedgerEntry) -> None:
        if entry.gone:
            if entry.id is not None and entry.key in self.entities:
                self.deleted_by_run[entry.key] = self.entities.pop(entry.key)
            return
        self.creations[entry.kind] = self.creations.get(entry.kind, 0) + entry.count
        if entry.id is None:
            self.counted[entry.kind] = self.counted.get(entry.kind, 0) + entry.count
        else:
            self.deleted_by_run.pop(entry.key, None)  # created again under a freed id: the run's again
            self.entities[entry.key] = entry


def encode_header(*, run_tag: str, target: str, cleanup: Any) -> bytes:
    return _line({"ledger": LEDGER_VERSION, "run_tag": run_tag, "target": target, "cleanup": cleanup})


def encode_entries(entries: Iterable[LedgerEntry]) -> bytes:
    lines = []
    for entry in entries:
        if entry.id is None:
            lines.append(_line({"k": entry.kind, "n": entry.count}))
        else:
            data: dict[str, Any] = {"k": entry.kind, "id": entry.id}
            if entry.url:
                data["url"] = entry.url
            if entry.gone:
                data["gone"] = 1
            lines.append(_line(data))
    return b"".join(lines)


def read_ledger(paths: Iterable[Path]) -> Ledger:
    """Every ledger file of a run (a breaking-point search writes one per level), merged."""
    ledger = Ledger()
    for path in sorted(Path(p) for p in paths):
        ledger.files += 1
        with open(path, "rb") as handle:
            for raw in handle:
                try:
                    line = json.loads(raw)
                except ValueError:
                    ledger.torn_lines += 1
                    continue
                if not isinstance(line, dict):
                    ledger.torn_lines += 1
                elif "ledger" in line:
                    ledger.run_tag = str(line.get("run_tag") or ledger.run_tag)
                    ledger.target = str(line.get("target") or ledger.target)
                    ledger.cleanup = line.get("cleanup", ledger.cleanup)
                elif "k" in line:
                    entity_id = line.get("id")
                    ledger.add(LedgerEntry(kind=str(line["k"]), id=None if entity_id is None else str(entity_id),
                                           url=line.get("url"), count=int(line.get("n") or 1),
                                           gone=bool(line.get("gone"))))
                else:
                    ledger.torn_lines += 1
    return ledger


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode() + b"\n"
