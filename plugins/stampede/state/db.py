"""Stampede's shared state: one SQLAlchemy database for every run, on every host.

What must hold across runs and hosts lives here, not in a run folder: the
target leases, the budget reservations and cost ledger, the run tags Stampede
issued, and the run history. SQLite in the reports folder by default
(``sqlite:///<reports>/stampede.sqlite``, fine for one host); a deployment whose
tasks run on several hosts points every host at one PostgreSQL database with
``STAMPEDE_STATE_URL`` (for example ``postgresql+psycopg2://user@db/stampede``).

Each module that keeps state defines its tables on :data:`metadata` and asks
for them with :func:`engine` (``engine(tables=(...))``), which creates the ones
still missing, once per process.
"""

from __future__ import annotations

import os
import threading

from sqlalchemy import MetaData, Table, create_engine, event
from sqlalchemy.engine import Engine

from stampede.core.paths import reports_root

ENV_URL = "STAMPEDE_STATE_URL"
DEFAULT_FILE = "stampede.sqlite"

metadata = MetaData()
_engines: dict[str, Engine] = {}
_created: dict[str, set[str]] = {}
_lock = threading.Lock()


def state_url() -> str:
    """``$STAMPEDE_STATE_URL``, else SQLite in the reports folder."""
    url = os.environ.get(ENV_URL)
    if url:
        return url
    root = reports_root()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / DEFAULT_FILE}"


def engine(url: str | None = None, *, tables: tuple[Table, ...] = ()) -> Engine:
    """The engine of ``url`` (default :func:`state_url`), created once per process; ``tables`` exist after it."""
    url = url or state_url()
    with _lock:
        found = _engines.get(url)
        if found is None:
            found = create_engine(url, future=True, pool_pre_ping=True)
            if found.dialect.name == "sqlite":
                event.listen(found, "connect", _sqlite_pragmas)
            _engines[url] = found
            _created[url] = set()
        missing = [t for t in tables if t.name not in _created[url]]
        if missing:
            metadata.create_all(found, tables=missing)
            _created[url].update(t.name for t in missing)
        return found


def dispose_all() -> None:
    """Close every engine (tests that change the URL; a process that forks)."""
    with _lock:
        for found in _engines.values():
            found.dispose()
        _engines.clear()
        _created.clear()


def _sqlite_pragmas(connection, _record) -> None:  # noqa: ANN001 (DBAPI connection)
    # several processes of one host share the file: wait for a lock instead of failing at once
    cursor = connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()
