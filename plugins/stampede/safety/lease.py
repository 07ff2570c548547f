"""One run per target: a lease file per ``host:port``, taken in preflight and given back in teardown.

``reports/locks/<host>_<port>.lock`` holds the run that owns the target::

    {"run_id": ..., "target": ..., "pid": 1234, "pid_started": 1.7e9,
     "acquired_at": "2026-...Z", "expires_at": 1.7e9}

- The CLI holds the lease with its own process (``pid``): when that process
  dies, the lease is stale and the next run takes it over.
- Airflow tasks run in separate processes, so a DAG run's lease has no pid and
  lives until teardown gives it back or ``expires_at`` passes (the planned load
  time plus a margin), whichever comes first. A killed DAG run's lease blocks
  the target until then, or until an operator deletes the file.
- The same run id may take its own lease again (a retried preflight).

Every read-modify-write happens under an exclusive ``fcntl.flock`` on the file,
so two preflights racing for one target cannot both win. The file is emptied,
never deleted, so the lock always guards the same inode. The lease assumes the
runs that share a target share the reports folder (one Airflow host, or a
shared volume); a deployment with workers on several hosts also sets a pool.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

import psutil

from stampede.core.errors import Refusal

__all__ = ["Lease", "TargetBusy", "acquire", "active_run_ids", "holder", "lock_path", "release", "target_key"]


class TargetBusy(Refusal):
    """Another run holds the target (one line: which run, since when, and the fix)."""


@dataclass(frozen=True)
class Lease:
    run_id: str
    target: str
    path: Path
    expires_at: float
    pid: int | None


def target_key(target: str) -> str:
    """``host_port`` of a target URL, e.g. ``127.0.0.1_8000`` (default ports filled in)."""
    parts = urlsplit(target)
    host = (parts.hostname or "unknown").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{host}_{port}")


def lock_path(locks_dir: Path, target: str) -> Path:
    return Path(locks_dir) / f"{target_key(target)}.lock"


def acquire(locks_dir: Path, target: str, *, run_id: str, ttl_s: float, pid: int | None) -> Lease:
    """Take the target for ``run_id``, or raise :class:`TargetBusy` naming the run that holds it.

    :param pid: the process whose life bounds the lease (the CLI); ``None`` for a DAG run (expiry only).
    """
    path = lock_path(locks_dir, target)
    now = time.time()
    with _locked(path) as handle:
        current = _read(handle)
        if current and current.get("run_id") != run_id and _active(current, now):
            since = current.get("acquired_at", "?")
            raise TargetBusy(
                f"target: another run (run id {current.get('run_id')}) is active on {_host_port(target)} since {since}; "
                f"fix: wait for it to finish (its lease ends {_iso(current.get('expires_at', now))} at the latest), "
                f"or, if that run is gone, delete {path}"
            )
        record = {
            "run_id": run_id, "target": target, "pid": pid, "pid_started": _started(pid),
            "acquired_at": _iso(now), "expires_at": now + ttl_s,
        }
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(record))
        handle.flush()
        os.fsync(handle.fileno())
    return Lease(run_id=run_id, target=target, path=path, expires_at=record["expires_at"], pid=pid)


def release(locks_dir: Path, target: str, *, run_id: str) -> bool:
    """Give the target back if ``run_id`` holds it; True when it did. Idempotent."""
    path = lock_path(locks_dir, target)
    if not path.exists():
        return False
    with _locked(path) as handle:
        current = _read(handle)
        if not current or current.get("run_id") != run_id:
            return False
        handle.seek(0)
        handle.truncate()
    return True


def holder(locks_dir: Path, target: str) -> dict[str, Any] | None:
    """The active lease on ``target`` (its record), or None."""
    path = lock_path(locks_dir, target)
    if not path.exists():
        return None
    with _locked(path) as handle:
        current = _read(handle)
    return current if current and _active(current, time.time()) else None


def active_run_ids(locks_dir: Path) -> set[str]:
    """Run ids of every active lease (the reaper leaves their data alone)."""
    ids = set()
    for path in Path(locks_dir).glob("*.lock"):
        try:
            record = json.loads(path.read_text() or "null")
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and _active(record, time.time()):
            ids.add(str(record.get("run_id")))
    return ids


@contextmanager
def _locked(path: Path) -> Iterator[IO[str]]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    with os.fdopen(fd, "r+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _read(handle: IO[str]) -> dict[str, Any] | None:
    handle.seek(0)
    text = handle.read().strip()
    if not text:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None  # a torn or foreign file holds nothing
    return record if isinstance(record, dict) else None


def _active(record: dict[str, Any], now: float) -> bool:
    if float(record.get("expires_at") or 0) <= now:
        return False
    pid = record.get("pid")
    if pid is None:
        return True
    try:
        process = psutil.Process(int(pid))
        started = record.get("pid_started")
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


def _host_port(target: str) -> str:
    parts = urlsplit(target)
    return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(float(epoch), tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")
