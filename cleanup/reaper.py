"""Remove what ended runs left behind: only for run tags Stampede issued, through the same declarations.

A run's own cleanup (``stampede.cleanup.run_data``) deletes what its ledger
recorded; the hourly ``loadtest_reaper`` DAG is the safety net behind it. It
never decides by a pattern: it is given the run tags Stampede issued and that
have ended (``stampede.state.tags``), and deletes only entities carrying one of
them as a whole token. ``LT-01103`` (a Lithuanian postcode) or ``LT-abcx`` (not
an issued tag, though it starts like one) is never touched, only counted as a
look-alike.

:func:`reap_target` sweeps one target with a cleanup declaration: for every kind
whose declaration can search, it lists what carries the tags' common prefix
``LT-``, deletes what carries an issued, ended tag, and counts again (``left``).
Kinds that cannot search are reaped from their runs' ledgers instead (the
reaper step resumes such a run's cleanup from its run folder, same journal).
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from stampede.cleanup.api import (
    Allowance, ApiSession, Credentials, OutOfTime, Pace, RequestFailed, render_path, search_pages,
)
from stampede.plan.cleanup_declaration import CleanupDeclaration, KindCleanup, value_at

__all__ = ["TAG_PREFIX", "ReapReport", "issued_tag_matcher", "reap_target"]

TAG_PREFIX = "LT-"  # what every run tag starts with: the reaper's search term
LOOKALIKE = re.compile(r"(?<![A-Za-z0-9])LT-[A-Za-z0-9]+")
MAX_ERRORS = 20


@dataclass
class ReapReport:
    """What one reaping did on one target."""

    base_url: str
    tags: int = 0  # issued, ended run tags it looked for
    found: int = 0  # entities carrying one of them
    deleted: int = 0
    left: int | None = None  # still carrying one of them at the final count; None: not counted
    lookalikes: int = 0  # entities with an LT-… token that is no issued, ended tag: never touched
    by_tag: dict[str, int] = field(default_factory=dict)  # run tag -> entities deleted
    not_searchable: list[str] = field(default_factory=list)  # kinds reaped only from their runs' ledgers
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.left == 0 and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def issued_tag_matcher(tags: Collection[str]) -> re.Pattern[str] | None:
    """One pattern for every tag, each as a whole token; ``None`` for no tags (which matches nothing)."""
    if not tags:
        return None
    alternatives = "|".join(re.escape(t) for t in sorted(tags, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z0-9])(?:{alternatives})(?![A-Za-z0-9])")


def reap_target(
    *,
    base_url: str,
    declaration: CleanupDeclaration,
    tags: Collection[str],
    credentials: Credentials,
    stall_s: float = 60.0,
) -> ReapReport:
    """Delete every entity on ``base_url`` that carries one of ``tags`` (issued and ended) as a whole token.

    :param declaration: the cleanup declaration of what runs create on this target.
    :param tags: the run tags Stampede issued whose runs have ended; nothing else is ever deleted.
    """
    report = ReapReport(base_url=base_url, tags=len(tags))
    matcher = issued_tag_matcher(tags)
    searchable = {kind: spec for kind, spec in declaration.kinds.items() if spec.search is not None}
    report.not_searchable = sorted(set(declaration.kinds) - set(searchable))
    if matcher is None or not searchable:
        report.left = 0
        return report
    pace = Pace(declaration.concurrency, max_rate=declaration.max_rate)
    with ApiSession(base_url, auth=declaration.auth, credentials=credentials, pace=pace) as session:
        try:
            session.start(Allowance(1, stall_s=stall_s))
            for kind, spec in searchable.items():
                stale = _stale(session, spec, matcher, report, stall_s, count_lookalikes=True)
                report.found += len(stale)
                with ThreadPoolExecutor(max_workers=declaration.concurrency) as pool:
                    gone = list(pool.map(lambda e, k=kind, s=spec: _delete(session, k, s, e[0], report, stall_s), stale))
                for (_entity_id, tag), deleted in zip(stale, gone):
                    if deleted:
                        report.deleted += 1
                        report.by_tag[tag] = report.by_tag.get(tag, 0) + 1
            report.left = sum(len(_stale(session, spec, matcher, report, stall_s, count_lookalikes=False))
                              for spec in searchable.values())
        except (RequestFailed, OutOfTime) as exc:
            report.errors.append(f"reaper {base_url}: {exc}")
            report.left = None
    return report


def _stale(session: ApiSession, spec: KindCleanup, matcher: re.Pattern[str], report: ReapReport, stall_s: float,
           *, count_lookalikes: bool) -> list[tuple[str, str]]:
    """(id, tag) of every listed entity carrying an issued, ended tag."""
    assert spec.search is not None
    stale = []
    for page in search_pages(session, spec.search, TAG_PREFIX, Allowance(0, stall_s=stall_s)):
        for item in page:
            text = json.dumps(item, ensure_ascii=False)
            match = matcher.search(text)
            entity_id = value_at(item, spec.search.id) if isinstance(item, dict) else None
            if match and entity_id is not None:
                stale.append((str(entity_id), match.group(0)))
            elif count_lookalikes and LOOKALIKE.search(text):
                report.lookalikes += 1
    return stale


def _delete(session: ApiSession, kind: str, spec: KindCleanup, entity_id: str, report: ReapReport,
            stall_s: float) -> bool:
    path = render_path(spec.delete.path, id=entity_id)
    try:
        reply = session.send(spec.delete.method, path, Allowance(1, stall_s=stall_s))
    except RequestFailed as exc:
        _error(report, str(exc))
        return False
    if 200 <= reply.status < 300 or reply.status in spec.gone:
        return True
    _error(report, f"{spec.delete.method} {path} ({kind}): HTTP {reply.status}")
    return False


def _error(report: ReapReport, message: str) -> None:
    if len(report.errors) < MAX_ERRORS:
        report.errors.append(message)
