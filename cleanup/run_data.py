"""Delete every entity a load-test run created, by its run tag, and prove none is left.

``cleanup_run_data`` is the pipeline's teardown for test data. It is safe to
run again and again (idempotent), after failures, and while nothing else is
known about the run but its tag:

- it refuses any tag that is not ``LT-<letters/digits>`` (an empty or partial
  tag could otherwise match, and delete, everything);
- it deletes only entities whose address carries the tag as a whole token
  (``LT-abc`` never matches ``LT-abcd-…``), even when the target's search is
  looser than that;
- a 204 and a 404 both mean "gone"; connection errors, 429 and 5xx are retried
  with bounded exponential backoff; everything is bounded by ``timeout_s``;
- it finishes with a fresh count, and reports what is ``left``.

Errors::

    ValueError          a refused run tag or bad argument: nothing was sent
    CleanupError        could not log in or could not count what is left;
                        ``.report`` holds what was done until then
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

__all__ = ["RUN_TAG_PATTERN", "CleanupError", "CleanupReport", "cleanup_run_data", "tag_matcher"]

logger = logging.getLogger("stampede.cleanup")

RUN_TAG_PATTERN = re.compile(r"^LT-[A-Za-z0-9]+$")  # used with fullmatch: "$" alone lets "LT-a\n" through
# kind -> the field that carries the run tag
KINDS = {"escrows": "property_address", "listings": "address"}
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_ATTEMPTS = 6
BACKOFF_FIRST_S = 0.25
BACKOFF_MAX_S = 8.0
REQUEST_TIMEOUT_S = 15.0
DELETE_CONCURRENCY = 8
MAX_ERRORS = 20  # error lines kept in a report; the rest are counted


@dataclass
class CleanupReport:
    """What one cleanup did: entities ``found`` with the tag, ``deleted`` (gone), ``left`` at the end."""

    run_tag: str
    found: int = 0
    deleted: int = 0
    left: int = 0
    errors: list[str] = field(default_factory=list)
    skipped: int = 0  # matched by the search but not carrying the tag as a whole token: never touched
    suppressed_errors: int = field(default=0, repr=False)

    @property
    def ok(self) -> bool:
        return self.left == 0 and not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_tag": self.run_tag, "found": self.found, "deleted": self.deleted, "left": self.left,
            "errors": list(self.errors), "skipped": self.skipped,
        }


class CleanupError(RuntimeError):
    """Cleanup could not prove what is left (login or the final count failed)."""

    def __init__(self, message: str, report: CleanupReport) -> None:
        super().__init__(message)
        self.report = report


class _Gone(Exception):
    """Internal: the time budget ran out."""


class _RequestFailed(Exception):
    """Internal: a request failed for good (not transient, or retries exhausted)."""


def tag_matcher(run_tag: str) -> re.Pattern[str]:
    """Matches text that carries ``run_tag`` as a whole token (not as the prefix of a longer tag)."""
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(run_tag)}(?![A-Za-z0-9])")


def cleanup_run_data(
    *,
    base_url: str,
    run_tag: str,
    email: str,
    password: str,
    timeout_s: float = 120,
    page_size: int = 100,
    transport: httpx.BaseTransport | None = None,
) -> CleanupReport:
    """Delete the run's escrows and listings from the target and count what is left.

    :param base_url: the target's API base URL, including ``/v1``.
    :param run_tag: the run's tag, ``LT-<letters/digits>``; anything else is refused.
    :param email: an account allowed to delete the run's entities (the admin account).
    :param password: its password (never logged).
    :param timeout_s: the whole cleanup's time budget, final count included.
    :param page_size: the page size used to list; at most what the target allows.
    :param transport: an httpx transport to send through (tests, custom networking); default: the network.
    :raises ValueError: the run tag or an argument is refused (nothing was sent).
    :raises CleanupError: logging in or the final count failed (``.report`` says what was done).
    """
    if not isinstance(run_tag, str) or not RUN_TAG_PATTERN.fullmatch(run_tag):
        raise ValueError(f"run_tag {run_tag!r} refused: it must look like LT-<letters/digits>")
    if timeout_s <= 0 or page_size < 1:
        raise ValueError("timeout_s must be > 0 and page_size >= 1")
    report = CleanupReport(run_tag=run_tag)
    started = time.monotonic()
    # keep a slice of the budget for the final count, which is what proves the result
    count_reserve = min(15.0, timeout_s * 0.2)
    session = _Session(base_url, email, password, deadline=started + timeout_s, transport=transport)
    with session:
        session.deadline = started + timeout_s - count_reserve
        try:
            session.login()
            for kind, field_name in KINDS.items():
                try:
                    _delete_kind(session, kind, field_name, run_tag, page_size, report)
                except _RequestFailed as exc:  # this kind could not be listed; still try the others
                    _add_error(report, str(exc))
        except _Gone:
            _add_error(report, f"time budget of {timeout_s:g}s ran out before everything was deleted")
        except _RequestFailed as exc:
            raise CleanupError(f"cleanup {run_tag}: could not log in: {exc}", report) from None
        session.deadline = started + timeout_s
        try:
            if session.token is None:
                session.login()
            report.left = sum(
                _count_tagged(session, kind, field_name, run_tag, page_size) for kind, field_name in KINDS.items()
            )
        except (_Gone, _RequestFailed) as exc:
            raise CleanupError(f"cleanup {run_tag}: could not count what is left: {exc}", report) from None
        if report.suppressed_errors:
            report.errors.append(f"... and {report.suppressed_errors} more errors")
    logger.info(
        "cleanup %s: found %d, deleted %d, left %d, skipped %d, errors %d (%.1fs)",
        run_tag, report.found, report.deleted, report.left, report.skipped, len(report.errors),
        time.monotonic() - started,
    )
    return report


def _delete_kind(
    session: _Session, kind: str, field_name: str, run_tag: str, page_size: int, report: CleanupReport,
) -> None:
    """Rounds of "collect every tagged id, then delete them" until a round finds nothing new.

    Ids are collected over all pages *before* deleting, because deleting while
    paging shifts the offsets and skips entities; a later round catches
    anything created or missed meanwhile. Ids that cannot be deleted are not
    retried within this call, so a stuck entity cannot loop forever.
    """
    matcher = tag_matcher(run_tag)
    attempted: set[str] = set()
    skipped: set[str] = set()
    while True:
        todo = []
        for item in _search_all(session, kind, run_tag, page_size):
            item_id = str(item.get("id"))
            if item_id in attempted:
                continue
            if not matcher.search(str(item.get(field_name, ""))):
                skipped.add(item_id)
                continue
            todo.append(item_id)
        if not todo:
            break
        attempted.update(todo)
        report.found += len(todo)
        with ThreadPoolExecutor(max_workers=DELETE_CONCURRENCY) as pool:
            for item_id, problem in zip(todo, pool.map(lambda i: _delete(session, kind, i), todo)):
                if problem is None:
                    report.deleted += 1
                else:
                    _add_error(report, f"DELETE /{kind}/{item_id}: {problem}")
        if session.out_of_time():
            raise _Gone()
    report.skipped += len(skipped)


def _add_error(report: CleanupReport, message: str) -> None:
    if len(report.errors) < MAX_ERRORS:
        report.errors.append(message)
    else:
        report.suppressed_errors += 1


def _delete(session: _Session, kind: str, item_id: str) -> str | None:
    """``None`` when the entity is gone (204 or 404), else what went wrong."""
    try:
        response = session.request("DELETE", f"/{kind}/{item_id}")
    except (_RequestFailed, _Gone) as exc:
        return str(exc) or "time budget ran out"
    if response.status_code in (204, 404):
        return None
    return f"HTTP {response.status_code}"


def _search_all(
    session: _Session, kind: str, run_tag: str, page_size: int, first: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    offset = 0
    while True:
        page = first if first is not None and offset == 0 else _page(session, kind, run_tag, page_size, offset)
        items.extend(page["items"])
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return items


def _count_tagged(session: _Session, kind: str, field_name: str, run_tag: str, page_size: int) -> int:
    first = _page(session, kind, run_tag, page_size, 0)
    if first["total"] == 0:
        return 0
    # the search may also match other runs' longer tags: count only this run's
    matcher = tag_matcher(run_tag)
    items = _search_all(session, kind, run_tag, page_size, first)
    return sum(1 for item in items if matcher.search(str(item.get(field_name, ""))))


def _page(session: _Session, kind: str, run_tag: str, limit: int, offset: int) -> dict[str, Any]:
    response = session.request("GET", f"/{kind}", params={"search": run_tag, "limit": limit, "offset": offset})
    if response.status_code != 200:
        raise _RequestFailed(f"GET /{kind}: HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError:
        raise _RequestFailed(f"GET /{kind}: body is not JSON") from None
    items, total = (body.get("items"), body.get("total")) if isinstance(body, dict) else (None, None)
    if not isinstance(items, list) or not isinstance(total, int) or not all(isinstance(i, dict) for i in items):
        raise _RequestFailed(f"GET /{kind}: body is not a page of {{items, total}}")
    return body


class _Session:
    """An httpx client with a bearer token, one re-login on 401, retries with backoff, and a deadline."""

    def __init__(
        self, base_url: str, email: str, password: str, *, deadline: float, transport: httpx.BaseTransport | None,
    ) -> None:
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), follow_redirects=False, timeout=REQUEST_TIMEOUT_S, transport=transport,
        )
        self._email = email
        self._password = password
        self._lock = threading.Lock()
        self.token: str | None = None
        self.deadline = deadline

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *_exc: Any) -> None:
        self._client.close()

    def out_of_time(self) -> bool:
        return time.monotonic() >= self.deadline

    def login(self) -> None:
        response = self._send("POST", "/auth/login", json={"email": self._email, "password": self._password})
        token = None
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError:
                body = None
            token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise _RequestFailed(f"POST /auth/login: HTTP {response.status_code}")  # never the body or the password
        self.token = token

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        used = self.token
        response = self._send(method, path, headers={"Authorization": f"Bearer {used}"}, **kwargs)
        if response.status_code == 401:
            with self._lock:  # one re-login for all threads that saw the same stale token
                if self.token == used:
                    self.login()
            response = self._send(method, path, headers={"Authorization": f"Bearer {self.token}"}, **kwargs)
        return response

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send with retries on transient failures; a redirect is an error, never followed."""
        delay = BACKOFF_FIRST_S
        problem = ""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise _Gone(f"{method} {path}: time budget ran out" + (f" (last: {problem})" if problem else ""))
            try:
                response = self._client.request(method, path, timeout=min(REQUEST_TIMEOUT_S, remaining), **kwargs)
            except httpx.TransportError as exc:  # connection refused/reset, timeouts
                problem = type(exc).__name__
                response = None
            if response is not None:
                if response.is_redirect:
                    raise _RequestFailed(f"{method} {path}: HTTP {response.status_code} redirect, not followed")
                if response.status_code not in TRANSIENT_STATUSES:
                    return response
                problem = f"HTTP {response.status_code}"
            if attempt == MAX_ATTEMPTS:
                break
            wait = min(delay, BACKOFF_MAX_S, max(0.0, self.deadline - time.monotonic()))
            if response is not None:
                wait = max(wait, min(_retry_after(response), BACKOFF_MAX_S, max(0.0, self.deadline - time.monotonic())))
            logger.debug("cleanup: %s %s: %s, retrying in %.2fs", method, path, problem, wait)
            time.sleep(wait)
            delay *= 2
        raise _RequestFailed(f"{method} {path}: {problem} after {MAX_ATTEMPTS} attempts")


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0
