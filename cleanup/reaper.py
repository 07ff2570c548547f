"""Remove stale load-test data: every ``LT-``-tagged entity older than an age, whatever run made it.

A run's own cleanup (``stampede.cleanup.run_data``) deletes its data by its tag; this is
the safety net for runs that died before their cleanup ran. The hourly
``loadtest_reaper`` DAG calls :func:`reap_stale_test_data` for every
environment that allows load.

- Age comes from the entity's ``created_at`` (the Target API returns it); when a
  target does not return it, from the run-tag registry (the reports folder has
  one folder per run tag: its ``results.json`` ``started_at``, else the folder's
  time). An entity whose age cannot be told is left alone and counted.
- Tags of runs that hold a target lease right now are never touched.
- Idempotent, paginated, retried on transient errors and never following
  redirects (it reuses the run cleanup's session); it ends with a fresh count of
  stale entities, ``left``, which must be zero.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx

from stampede.cleanup.run_data import (  # the run cleanup's session: retries, deadline, no redirects
    DELETE_CONCURRENCY, KINDS, CleanupError, CleanupReport, _delete, _Gone, _RequestFailed, _search_all, _Session,
)

__all__ = ["ReapReport", "reap_stale_test_data", "tag_of"]

logger = logging.getLogger("stampede.cleanup.reaper")

TAG = re.compile(r"(?<![A-Za-z0-9])(LT-[A-Za-z0-9]+)(?![A-Za-z0-9])")


@dataclass
class ReapReport:
    """What one reaping did on one target."""

    base_url: str
    older_than_s: float
    found: int = 0  # stale entities found
    deleted: int = 0
    left: int = 0  # stale entities still there at the final count
    kept_recent: int = 0  # tagged, but younger than the age
    kept_active: int = 0  # tagged by a run that is running now
    unknown_age: int = 0  # tagged, but no created_at and no registry entry: left alone
    tags: dict[str, int] = field(default_factory=dict)  # run tag -> stale entities deleted
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.left == 0 and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def tag_of(text: str) -> str | None:
    """The run tag an entity's address carries, e.g. ``LT-nightly20260101``; None when untagged."""
    match = TAG.search(text or "")
    return match.group(1) if match else None


def reap_stale_test_data(
    *,
    base_url: str,
    email: str,
    password: str,
    older_than_s: float,
    active_tags: Collection[str] = (),
    registry_dir: Path | None = None,
    now: datetime | None = None,
    timeout_s: float = 300,
    page_size: int = 100,
    transport: httpx.BaseTransport | None = None,
) -> ReapReport:
    """Delete every ``LT-``-tagged entity older than ``older_than_s`` from one target.

    :param base_url: the target's API base URL, including ``/v1``.
    :param email: an account allowed to delete any entity (the admin account).
    :param password: its password (never logged).
    :param older_than_s: the age (seconds) past which tagged data is stale.
    :param active_tags: run tags of runs in progress: never touched.
    :param registry_dir: the reports folder (one folder per run tag) for entities without ``created_at``.
    :param now: the time ages are measured against (default: now).
    :raises CleanupError: logging in or the final count failed.
    """
    if older_than_s < 0:
        raise ValueError("older_than_s must be >= 0")
    now = now or datetime.now(timezone.utc)
    report = ReapReport(base_url=base_url, older_than_s=older_than_s)
    active = set(active_tags)
    started = time.monotonic()
    session = _Session(base_url, email, password, deadline=started + timeout_s, transport=transport)
    with session:
        try:
            session.login()
            for kind, field_name in KINDS.items():
                stale = _stale(session, kind, field_name, report, active, registry_dir, now, page_size, count_kept=True)
                report.found += len(stale)
                with ThreadPoolExecutor(max_workers=DELETE_CONCURRENCY) as pool:
                    for (item_id, tag), problem in zip(stale, pool.map(lambda e: _delete(session, kind, e[0]), stale)):
                        if problem is None:
                            report.deleted += 1
                            report.tags[tag] = report.tags.get(tag, 0) + 1
                        else:
                            report.errors.append(f"DELETE /{kind}/{item_id}: {problem}")
            report.left = sum(
                len(_stale(session, kind, field_name, report, active, registry_dir, now, page_size, count_kept=False))
                for kind, field_name in KINDS.items()
            )
        except _Gone:
            report.errors.append(f"time budget of {timeout_s:g}s ran out")
            report.left = -1  # unknown
        except _RequestFailed as exc:
            raise CleanupError(f"reaper {base_url}: {exc}", CleanupReport(run_tag="LT-reaper")) from None
    logger.info(
        "reaper %s: found %d stale, deleted %d, left %d (kept: %d recent, %d active, %d of unknown age) in %.1fs",
        base_url, report.found, report.deleted, report.left, report.kept_recent, report.kept_active,
        report.unknown_age, time.monotonic() - started,
    )
    return report


def _stale(
    session: _Session, kind: str, field_name: str, report: ReapReport, active: set[str],
    registry_dir: Path | None, now: datetime, page_size: int, *, count_kept: bool,
) -> list[tuple[str, str]]:
    """(id, tag) of every stale tagged entity of ``kind``; counts what is kept when ``count_kept``."""
    stale = []
    registry: dict[str, datetime | None] = {}
    for item in _search_all(session, kind, "LT-", page_size):
        tag = tag_of(str(item.get(field_name, "")))
        if tag is None:
            continue
        if tag in active:
            report.kept_active += count_kept
            continue
        created = _parse_time(item.get("created_at"))
        if created is None:
            if tag not in registry:
                registry[tag] = _registry_time(registry_dir, tag)
            created = registry[tag]
        if created is None:
            report.unknown_age += count_kept
            continue
        if (now - created).total_seconds() < report.older_than_s:
            report.kept_recent += count_kept
            continue
        stale.append((str(item.get("id")), tag))
    return stale


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _registry_time(registry_dir: Path | None, tag: str) -> datetime | None:
    """When the run with this tag started, from its reports folder; None when unknown."""
    if registry_dir is None:
        return None
    folder = Path(registry_dir) / tag
    if not folder.is_dir():
        return None
    try:
        started = json.loads((folder / "results.json").read_text()).get("started_at")
        parsed = _parse_time(started)
        if parsed:
            return parsed
    except (OSError, ValueError, AttributeError):
        pass
    return datetime.fromtimestamp(folder.stat().st_mtime, tz=timezone.utc)


def reap_all_targets(
    *,
    older_than_s: float,
    extra_targets: Collection[str] = (),
    environments_text: str | None = None,
    password: str,
    email: str,
    reports_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Reap every environment that allows load and lists base URLs, plus ``extra_targets``.

    Each target must pass the same check as a load run (``resolve_target``): the
    reaper never touches production, nor a host no environment lists.
    """
    from stampede.safety import lease as target_lock
    from stampede.plan.environments import TargetRefused, load_environments, resolve_target
    from stampede.plan.run_plan import run_tag_for

    environments = load_environments(environments_text)
    targets = [url for env in environments.values() if env.allow_load for url in env.base_urls]
    targets += [t for t in extra_targets if t not in targets]
    active = {run_tag_for(run_id) for run_id in target_lock.active_run_ids(Path(reports_dir) / "locks")}
    outcome: dict[str, dict[str, Any]] = {}
    for target in targets:
        target = target.rstrip("/")
        try:
            resolve_target(target, environments)
            report = reap_stale_test_data(
                base_url=target, email=email, password=password, older_than_s=older_than_s,
                active_tags=active, registry_dir=reports_dir,
            )
            outcome[target] = report.to_dict()
        except (TargetRefused, CleanupError, ValueError) as exc:
            outcome[target] = {"ok": False, "errors": [str(exc)]}
            logger.warning("reaper %s: %s", target, exc)
    return outcome
