"""One run per target: a lease per resolved address and port, in the shared state database.

Preflight takes the lease of every address the target resolved to (one row per
``address:port`` in ``stampede_target_leases``, :mod:`stampede.state.db`); the
worker teardown gives it back once no worker of the run is alive. Keyed by what
the target *is*, not by how it was written: ``localhost``, ``127.0.0.1`` and
``::1`` are one target, and so is every loopback address (all of them are this
machine: ``loopback:<port>``); a name and its IP literal share their rows.

- The command line holds its lease with its own process (``pid`` on ``host``):
  when that process is gone, the lease is stale and the next run takes it over.
- Airflow tasks run in separate processes, so a DAG run's lease has no pid and
  lives until teardown gives it back or ``expires_at`` passes (the planned load
  time plus a margin). A killed DAG run's lease blocks the target until then,
  or until an operator releases it (``stampede lease release RUN_ID``).
- The same run id may take its own lease again (a retried preflight).

Acquiring is atomic on SQLite and PostgreSQL alike: one transaction inserts the
missing rows (``INSERT … ON CONFLICT DO NOTHING``, a write first, so SQLite's
writer lock is held from the start), then takes over a stale row only by
compare-and-swap on its holder; a row another live run holds aborts the whole
transaction, so two preflights racing for one target never both win, and a run
never holds some of a target's addresses but not the others.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import psutil
from sqlalchemy import Column, Float, Integer, String, Table, delete, select, update
from sqlalchemy.engine import Connection

from stampede.core.errors import Refusal
from stampede.plan.target import Target, parse_target, resolve
from stampede.state import db

__all__ = ["Lease", "TargetBusy", "acquire", "active_run_ids", "active_run_tags", "holder", "lease_keys",
           "leases", "release"]

leases = Table(
    "stampede_target_leases", db.metadata,
    Column("key", String(300), primary_key=True),  # loopback:8000 | 10.0.0.7:443 | [2001:db8::7]:443
    Column("run_id", String(250), nullable=False),
    Column("run_tag", String(120), nullable=False, default=""),
    Column("target", String(500), nullable=False, default=""),
    Column("pid", Integer, nullable=True),  # the command line's process; None: a DAG run (expiry only)
    Column("pid_started", Float, nullable=True),
    Column("host", String(255), nullable=False, default=""),  # where pid lives
    Column("acquired_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
)


class TargetBusy(Refusal):
    """Another run holds the target (one line: which run, since when, and the fix)."""


@dataclass(frozen=True)
class Lease:
    run_id: str
    target: str
    keys: tuple[str, ...]
    expires_at: float
    pid: int | None


def lease_keys(target: Target) -> tuple[str, ...]:
    """The rows a target's lease takes: one per resolved address and port, loopback as one machine."""
    if not target.addresses:
        raise ValueError(f"lease: {target.url} was not resolved; preflight resolves the target first")
    keys = set()
    for address in target.addresses:
        ip = ipaddress.ip_address(address)
        if ip.is_loopback:
            keys.add(f"loopback:{target.port}")
        else:
            keys.add(f"[{ip.compressed}]:{target.port}" if ip.version == 6 else f"{ip}:{target.port}")
    return tuple(sorted(keys))


def acquire(target: Target | str, *, run_id: str, ttl_s: float, pid: int | None, run_tag: str = "") -> Lease:
    """Take the target for ``run_id``, or raise :class:`TargetBusy` naming the run that holds it.

    :param pid: the process whose life bounds the lease (the command line); ``None`` for a DAG run.
    """
    target = _resolved(target)
    keys = lease_keys(target)
    now = time.time()
    record = {"run_id": run_id, "run_tag": run_tag, "target": target.url, "pid": pid, "pid_started": _started(pid),
              "host": socket.gethostname(), "acquired_at": now, "expires_at": now + ttl_s}
    engine = db.engine(tables=(leases,))
    with engine.begin() as conn:
        for key in keys:
            _insert_missing(conn, {"key": key, **record})
        for row in conn.execute(select(leases).where(leases.c.key.in_(keys)).order_by(leases.c.key)).mappings():
            if row["run_id"] == run_id:
                continue
            if _active(dict(row), now):
                raise _busy(dict(row), target, now)
            taken = conn.execute(update(leases).where(
                leases.c.key == row["key"], leases.c.run_id == row["run_id"],
                leases.c.acquired_at == row["acquired_at"]).values(**record))
            if taken.rowcount != 1:  # another preflight took the stale row first
                current = conn.execute(select(leases).where(leases.c.key == row["key"])).mappings().first()
                raise _busy(dict(current or row), target, now)
        conn.execute(update(leases).where(leases.c.key.in_(keys), leases.c.run_id == run_id).values(
            expires_at=record["expires_at"], pid=pid, pid_started=record["pid_started"], host=record["host"],
            run_tag=run_tag, target=target.url))
    return Lease(run_id=run_id, target=target.url, keys=keys, expires_at=record["expires_at"], pid=pid)


def release(*, run_id: str, target: Target | str | None = None) -> bool:
    """Give back what ``run_id`` holds (on ``target`` only, when given); True when a row was released. Idempotent."""
    query = delete(leases).where(leases.c.run_id == run_id)
    if target is not None:
        query = query.where(leases.c.key.in_(lease_keys(_resolved(target))))
    with db.engine(tables=(leases,)).begin() as conn:
        return conn.execute(query).rowcount > 0


def holder(target: Target | str) -> dict[str, Any] | None:
    """The active lease on ``target`` (its row), or None."""
    keys = lease_keys(_resolved(target))
    now = time.time()
    with db.engine(tables=(leases,)).connect() as conn:
        for row in conn.execute(select(leases).where(leases.c.key.in_(keys))).mappings():
            if _active(dict(row), now):
                return dict(row)
    return None


def active_run_ids(_legacy_locks_dir: Any = None) -> set[str]:
    """Run ids of every active lease (the reaper leaves their data alone).

    The argument is ignored (leases lived in files under ``reports/locks`` before the state database).
    """
    return {row["run_id"] for row in _active_rows()}


def active_run_tags() -> set[str]:
    """Run tags of every active lease."""
    return {row["run_tag"] for row in _active_rows() if row["run_tag"]}


def _active_rows() -> list[dict[str, Any]]:
    now = time.time()
    with db.engine(tables=(leases,)).connect() as conn:
        rows = [dict(r) for r in conn.execute(select(leases).where(leases.c.expires_at > now)).mappings()]
    return [r for r in rows if _active(r, now)]


def _resolved(target: Target | str) -> Target:
    if isinstance(target, str):
        target = parse_target(target)
    return target if target.addresses else resolve(target)


def _insert_missing(conn: Connection, row: dict[str, Any]) -> None:
    dialect = conn.dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:  # pragma: no cover - Stampede's state lives in SQLite or PostgreSQL
        raise RuntimeError(f"lease: the state database {dialect} is not supported; use SQLite or PostgreSQL")
    conn.execute(insert(leases).values(**row).on_conflict_do_nothing(index_elements=["key"]))


def _busy(row: dict[str, Any], target: Target, now: float) -> TargetBusy:
    return TargetBusy(
        f"target: another run (run id {row.get('run_id')}) is active on {target.netloc} since "
        f"{_iso(row.get('acquired_at') or now)}; fix: wait for it to finish (its lease ends "
        f"{_iso(row.get('expires_at') or now)} at the latest), or, if that run is gone, release it with "
        f"`stampede lease release {row.get('run_id')}`"
    )


def _active(row: dict[str, Any], now: float) -> bool:
    if float(row.get("expires_at") or 0) <= now:
        return False
    pid = row.get("pid")
    if pid is None or (row.get("host") and row.get("host") != socket.gethostname()):
        return True  # a DAG run, or a process on another host: its expiry bounds it
    try:
        process = psutil.Process(int(pid))
        started = row.get("pid_started")
        return started is None or abs(process.create_time() - float(started)) < 1.0  # not a reused pid
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def _started(pid: int | None) -> float | None:
    if pid is None:
        return None
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(float(epoch), tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
