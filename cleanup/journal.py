"""What cleanup sent and what is gone, on disk as it goes: a retried cleanup resumes and deletes nothing twice.

Before a DELETE leaves, its entity is journaled ``sent`` and the journal is on
disk (``os.fsync``); once the answer says the entity is gone, it is journaled
``gone``. A cleanup killed at any moment and run again:

- skips what is ``gone`` (counted as ``resumed``);
- does not send a second DELETE for what was ``sent`` without an answer: it
  checks first, and deletes only an entity that still carries the run tag. An
  API that hands a freed id to a new entity (json-server does: its next id is
  the largest plus one) would otherwise have the retry delete someone else's.

Many senders share one ``fsync`` (group commit): each waits only until a sync
covers its own line, so the journal costs one sync per round of requests in
flight, not one per entity. ``gone`` lines go to the OS at once (a killed
process loses none) and to the disk with the next sync; one lost to a machine
crash only makes that entity be checked again. So after a kill, at most the
requests that were in flight (the declaration's ``concurrency``) are sent again,
each only after a check shows the entity still there and still the run's.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

__all__ = ["Journal"]

SENT, GONE = "sent", "gone"


class Journal:
    """An append-only journal of ``sent`` and ``gone`` entities, keyed ``(kind, id)``."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.gone: dict[tuple[str, str], str] = {}  # key -> why (deleted, already_gone, not_ours, swept)
        self.sent: set[tuple[str, str]] = set()
        self.torn_lines = 0
        self._read()
        self._handle = open(self.path, "ab")  # noqa: SIM115 - kept open for the cleanup
        self._lock = threading.Lock()
        self._sync_lock = threading.Lock()
        self._appended = 0
        self._synced = 0

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def uncertain(self) -> set[tuple[str, str]]:
        """Sent, but no answer recorded: check before deleting again."""
        return self.sent - set(self.gone)

    def mark_sent(self, key: tuple[str, str]) -> None:
        """Journal ``key`` as sent and return once that is on disk."""
        seq = self._append([SENT, *key])
        self.sent.add(key)
        self._sync_through(seq)

    def mark_gone(self, key: tuple[str, str], why: str) -> None:
        """Journal ``key`` as gone: handed to the OS at once (a killed process loses none), synced later."""
        self._append([GONE, *key, why], flush=True)
        self.gone[key] = why

    def close(self) -> None:
        with self._lock:
            if self._handle.closed:
                return
            self._handle.flush()
            os.fsync(self._handle.fileno())
            self._handle.close()

    def _append(self, record: list[str], *, flush: bool = False) -> int:
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self._handle.write(line)
            if flush:
                self._handle.flush()
            self._appended += 1
            return self._appended

    def _sync_through(self, seq: int) -> None:
        with self._sync_lock:
            if self._synced >= seq:
                return  # another sender's sync covered this line
            with self._lock:
                self._handle.flush()
                target = self._appended
            os.fsync(self._handle.fileno())
            self._synced = target

    def _read(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as handle:
            for raw in handle:
                try:
                    record = json.loads(raw)
                    state, kind, entity_id = record[0], str(record[1]), str(record[2])
                except (ValueError, IndexError, TypeError):
                    self.torn_lines += 1  # the last line of a killed cleanup
                    continue
                if state == SENT:
                    self.sent.add((kind, entity_id))
                elif state == GONE:
                    self.gone[(kind, entity_id)] = str(record[3]) if len(record) > 3 else "deleted"
