"""Stampede's shared state: one SQLAlchemy database for every run, on every host.

What must hold across runs and hosts lives here, not in a run folder: the
target leases, the budget reservations and cost ledger, the run tags Stampede
issued, and the run history. SQLite in the reports folder by default
(``sqlite:///<reports>/stampede.sqlite``, fine for one host); a deployment whose
tasks run on several hosts points every host at one PostgreSQL database with
``STAMPEDE_STATE_URL`` (for example ``postgresql+psycopg2://stampede@db/stampede``).
``STAMPEDE_HISTORY_URL``, the history's own setting before the state was one
database, is read as an alias, and so is the Airflow Variable
``stampede_state_url`` (or the older ``stampede_history_url``) inside a task.

Each module that keeps state defines its tables on :data:`metadata` and asks
for them with :func:`engine` (``engine(tables=(...))``), which creates the ones
still missing, once per process. A check that must not race another host's
(the budget, the lease) runs inside :func:`exclusive`: one transaction that
holds a database-wide lock for its key until it commits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, MetaData, Table, create_engine, event, text
from sqlalchemy.engine import Engine

from stampede.core.paths import reports_root

log = logging.getLogger(__name__)

ENV_URL = "STAMPEDE_STATE_URL"
ENV_URL_ALIASES = ("STAMPEDE_HISTORY_URL",)  # the run history's setting before the shared state
VARIABLE_URLS = ("stampede_state_url", "stampede_history_url")
DEFAULT_FILE = "stampede.sqlite"

metadata = MetaData()
_engines: dict[str, Engine] = {}
_created: dict[str, set[str]] = {}
_lock = threading.Lock()


def state_url() -> str:
    """``$STAMPEDE_STATE_URL`` (or its alias), else the Airflow Variable inside a task, else SQLite in the reports folder."""
    for name in (ENV_URL, *ENV_URL_ALIASES):
        url = os.environ.get(name)
        if url:
            return url
    if "airflow.sdk" in sys.modules:  # a task: the deployment may set it as a Variable
        for name in VARIABLE_URLS:
            url = airflow_variable(name)
            if url:
                return url
    root = reports_root()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / DEFAULT_FILE}"


def airflow_variable(name: str) -> str | None:
    """The Airflow Variable `name`, or None (also when no Airflow API server or metadata DB is reachable)."""
    try:
        from airflow.sdk import Variable

        return Variable.get(name, default=None) or None
    except Exception as exc:  # noqa: BLE001 - no API server or metadata DB here: the default applies
        log.debug("Airflow Variable %s not available (%s)", name, type(exc).__name__)
        return None


def engine(url: str | None = None, *, tables: tuple[Table, ...] = ()) -> Engine:
    """The engine of ``url`` (default :func:`state_url`), created once per process; ``tables`` exist after it."""
    url = url or state_url()
    with _lock:
        found = _engines.get(url)
        if found is None:
            found = create_engine(url, future=True, pool_pre_ping=True)
            if found.dialect.name == "sqlite":
                event.listen(found, "connect", _sqlite_connect)
                event.listen(found, "begin", _sqlite_begin)
            _engines[url] = found
            _created[url] = set()
        missing = [t for t in tables if t.name not in _created[url]]
        if missing:
            metadata.create_all(found, tables=missing)
            _created[url].update(t.name for t in missing)
        return found


@contextmanager
def exclusive(key: str, *, url: str | None = None, tables: tuple[Table, ...] = ()) -> Iterator[Connection]:
    """One transaction that holds the lock named ``key`` until it commits (or rolls back on an error).

    Two hosts that check and then write (is the month's budget still enough? is
    the target free?) inside ``exclusive`` with the same key run one after the
    other, so neither decides on a state the other is about to change.
    PostgreSQL: a transaction-scoped advisory lock (``pg_advisory_xact_lock``),
    keyed by a 64-bit hash of ``key``; other keys do not wait. SQLite: ``BEGIN
    IMMEDIATE``, which takes the file's write lock (for every key: one host only).
    """
    found = engine(url, tables=tables)
    with found.connect() as conn:
        if found.dialect.name == "sqlite":
            conn = conn.execution_options(stampede_begin="IMMEDIATE")
        with conn.begin():
            if found.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": lock_id(key)})
            yield conn


def lock_id(key: str) -> int:
    """``key`` as a signed 64-bit number (PostgreSQL's advisory locks are keyed by a bigint)."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


def dispose_all() -> None:
    """Close every engine (tests that change the URL; a process that forks)."""
    with _lock:
        for found in _engines.values():
            found.dispose()
        _engines.clear()
        _created.clear()


def _sqlite_connect(connection, _record) -> None:  # noqa: ANN001 (DBAPI connection)
    # The driver's own transaction handling off, so that _sqlite_begin decides how each
    # transaction begins (pysqlite would otherwise start one only at the first write).
    connection.isolation_level = None
    # several processes of one host share the file: wait for a lock instead of failing at once
    cursor = connection.cursor()
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get('stampede_begin', 'DEFERRED')}")
