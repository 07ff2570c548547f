"""Delete what a run created, from its ledger, on any API; then prove what is left.

``clean_run`` is the pipeline's teardown for test data. It works from the
run's ledger (:mod:`stampede.cleanup.ledger`): what the run recorded as
created, kind by kind, deleted as the run's cleanup declaration says
(:mod:`stampede.plan.cleanup_declaration`). So its work is proportional to
what the run created, never a listing of the whole API first. In order:

1. **Delete** every recorded entity not already gone, streamed with bounded
   concurrency (``Pace``: a window that halves on 429/503 and waits out
   ``Retry-After``), each one journaled before its DELETE leaves
   (:mod:`stampede.cleanup.journal`), so a retried or later cleanup continues
   where the last stopped and never sends a second DELETE blind.
2. **Sweep**: where the API can search, what still carries the run tag (as a
   whole token: ``LT-abc`` never matches ``LT-abcd``) is deleted too, such as
   what a worker created in the seconds before it was killed.
3. **Prove**: ``left`` is always computed, never a default: by the search for
   the run tag where the declaration has one, otherwise by asking for every
   recorded entity (GET → 404). Whatever cannot be asked about makes ``left``
   unknown (``None``), and unknown is not clean.

A 2xx or a ``gone`` status (404, 410) means gone; a redirect is never followed.
Each phase's time is in proportion to its work and ends early on a stall
(:class:`stampede.cleanup.api.Allowance`). Nothing is ever deleted for a run
tag that is not ``LT-<letters/digits>``. Without a declaration, cleanup can
only say what it knows is there: each recorded entity with a path is asked for.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from stampede.cleanup.api import (
    Allowance, ApiSession, Credentials, OutOfTime, Pace, Reply, RequestFailed, render_path, search_pages,
)
from stampede.cleanup.journal import Journal
from stampede.cleanup.ledger import Ledger, LedgerEntry
from stampede.core.records import CleanupKindResult, CleanupResult
from stampede.plan.cleanup_declaration import CleanupDeclaration, KindCleanup, hook_parts, value_at

__all__ = ["RUN_TAG_PATTERN", "HookContext", "Timing", "clean_run", "tag_matcher"]

logger = logging.getLogger("stampede.cleanup")

RUN_TAG_PATTERN = re.compile(r"^LT-[A-Za-z0-9]+$")  # used with fullmatch: "$" alone lets "LT-a\n" through
MAX_ERRORS = 20  # error lines kept; the rest are counted
PROGRESS_EVERY_S = 5.0

# what became of one entity
DELETED, ALREADY_GONE, NOT_OURS, FAILED, PRESENT, UNKNOWN, STOPPED = (
    "deleted", "already_gone", "not_ours", "failed", "present", "unknown", "stopped")


@dataclass(frozen=True)
class Timing:
    """How much time each phase gets: ``base_s + work / min_rate``, ended by ``stall_s`` without progress."""

    base_s: float = 60.0
    min_rate: float = 5.0
    stall_s: float = 60.0

    def allowance(self, work: int) -> Allowance:
        return Allowance(work, base_s=self.base_s, min_rate=self.min_rate, stall_s=self.stall_s)


def tag_matcher(run_tag: str) -> re.Pattern[str]:
    """Matches text that carries ``run_tag`` as a whole token (not as the prefix of a longer tag)."""
    return re.compile(rf"(?<![A-Za-z0-9]){re.escape(run_tag)}(?![A-Za-z0-9])")


def check_run_tag(run_tag: str) -> None:
    """An empty or partial tag could match, and delete, everything: refused before anything is sent."""
    if not isinstance(run_tag, str) or not RUN_TAG_PATTERN.fullmatch(run_tag):
        raise ValueError(f"run_tag {run_tag!r} refused: it must look like LT-<letters/digits>")


def clean_run(
    *,
    base_url: str,
    run_tag: str,
    declaration: CleanupDeclaration | None,
    ledger: Ledger,
    journal_path: Path,
    credentials: Credentials,
    timing: Timing = Timing(),
) -> CleanupResult:
    """Delete the run's recorded entities from the target, sweep what carries its tag, and count what is left.

    :param base_url: the target's API base URL (its path prefix included, e.g. ``/v1``).
    :param run_tag: the run's tag, ``LT-<letters/digits>``; anything else is refused.
    :param declaration: how to delete and find the run's entities; ``None``: nothing declared.
    :param ledger: what the run recorded as created.
    :param journal_path: the run's cleanup journal (resumed when it exists).
    :param credentials: what the declaration's ``{password}``, ``{account.*}`` and secrets stand for.
    :raises ValueError: the run tag is refused (nothing was sent).
    """
    check_run_tag(run_tag)
    started = time.monotonic()
    if declaration is not None and declaration.creates_nothing:
        result = _declared_read_only(ledger)
    else:
        auth_declaration = declaration or CleanupDeclaration()
        pace = Pace(auth_declaration.concurrency, max_rate=auth_declaration.max_rate)
        with ApiSession(base_url, auth=auth_declaration.auth, credentials=credentials, pace=pace) as session, \
                Journal(journal_path) as journal:
            run = _Run(session=session, journal=journal, declaration=declaration, ledger=ledger, run_tag=run_tag,
                       timing=timing, base_url=base_url)
            result = run.execute()
            result.requests, result.throttled = session.requests, pace.throttled
    result.duration_s = round(time.monotonic() - started, 2)
    logger.info(
        "cleanup %s: created %d, deleted %d (%d already gone, %d resumed, %d swept), left %s by %s in %.1f s%s",
        run_tag, result.created, result.deleted, result.already_gone, result.resumed, result.swept,
        "unknown" if result.left is None else result.left, result.proof or "nothing", result.duration_s,
        f"; {result.error}" if result.error else "",
    )
    return result


def _declared_read_only(ledger: Ledger) -> CleanupResult:
    """``cleanup: none``: clean when the run recorded nothing; what it recorded anyway was never deleted."""
    if ledger.created == 0:
        return CleanupResult(created=0, left=0, ok=True, proof="declared")
    return CleanupResult(
        created=ledger.created, left=ledger.created, ok=False, proof="declared",
        error=f"the scenario says cleanup: none, but the run recorded {ledger.created} created entities "
              f"({_kinds_text(ledger.kinds())}); fix: declare cleanup.kinds for them",
    )


@dataclass
class HookContext:
    """What a cleanup hook (``cleanup: {hook: file.py:function}``) is given; it returns ``{deleted, left}``.

    ``send`` goes through the cleanup's session (auth, pacing, retries, no
    redirects); ``is_ours(text)`` says whether text carries the run tag as a
    whole token; ``mark_gone(entry)`` journals an entity so a retry skips it.
    ``left`` must be counted by the hook: ``None`` means unknown, never clean.
    """

    base_url: str
    run_tag: str
    entities: list[LedgerEntry]
    counted: dict[str, int]
    already_gone: set[tuple[str, str]]
    send: Callable[..., Reply]
    is_ours: Callable[[str], bool]
    mark_gone: Callable[[LedgerEntry], None]


@dataclass
class _Tally:
    kinds: dict[str, Counter] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    suppressed: int = 0

    def count(self, kind: str, outcome: str, n: int = 1) -> None:
        self.kinds.setdefault(kind, Counter())[outcome] += n

    def error(self, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(message)
        else:
            self.suppressed += 1

    def text(self) -> str | None:
        if not self.errors:
            return None
        return "; ".join(self.errors) + (f"; and {self.suppressed} more" if self.suppressed else "")


class _Run:
    """One cleanup of one run: delete, sweep, prove."""

    def __init__(self, *, session: ApiSession, journal: Journal, declaration: CleanupDeclaration | None,
                 ledger: Ledger, run_tag: str, timing: Timing, base_url: str) -> None:
        self.session, self.journal, self.ledger, self.timing = session, journal, ledger, timing
        self.declaration = declaration
        self.kinds = declaration.kinds if declaration else {}
        self.run_tag = run_tag
        self.base_url = base_url
        self.matcher = tag_matcher(run_tag)
        self.tally = _Tally()
        self.concurrency = declaration.concurrency if declaration else 8
        self.swept = 0
        self.delete_rate: float | None = None
        self._kind_proof: dict[str, tuple[int | None, str]] = {}

    # -- the whole run ---------------------------------------------------------------------------
    def execute(self) -> CleanupResult:
        try:
            self.session.start(self.timing.allowance(1))
        except (RequestFailed, OutOfTime) as exc:
            return self._result(left=None, proof="", errors=[f"could not authenticate: {exc}"])
        if self.declaration is not None and self.declaration.hook:
            return self._hook()
        recorded = list(self.ledger.entities.values())
        declared = [e for e in recorded if e.kind in self.kinds]
        resumed = sum(1 for e in declared if e.key in self.journal.gone)  # settled by an earlier attempt
        pending = [e for e in declared if e.key not in self.journal.gone]
        stop = self._delete_all(pending)
        if stop is None:
            stop = self._sweep()
        left, proof = self._prove([*recorded, *self.ledger.deleted_by_run.values()])
        errors = [f"cleanup stopped: {stop}"] if stop else []
        return self._result(left=left, proof=proof, errors=errors, resumed=resumed)

    # -- 1. delete what the ledger recorded ---------------------------------------------------------
    def _delete_all(self, pending: list[LedgerEntry]) -> str | None:
        allowance = self.timing.allowance(len(pending))
        uncertain = self.journal.uncertain
        started = time.monotonic()

        def delete(entry: LedgerEntry) -> str:
            spec = self.kinds[entry.kind]
            return self._delete(entry, spec, allowance, verify=spec.verify_before_delete or entry.key in uncertain)

        outcomes, stopped = self._each(pending, delete, allowance, label="deleted")
        for entry, outcome in outcomes:
            self.tally.count(entry.kind, outcome)
        elapsed = time.monotonic() - started
        resolved = sum(1 for _, o in outcomes if o in (DELETED, ALREADY_GONE, NOT_OURS))
        if resolved and elapsed > 0:
            self.delete_rate = round(resolved / elapsed, 1)
        return stopped

    def _delete(self, entry: LedgerEntry, spec: KindCleanup, allowance: Allowance, *, verify: bool,
                why: str = DELETED) -> str:
        key = entry.key
        if verify:  # sent before without an answer, or an API that reuses ids: only what carries the tag
            state = self._check(entry, spec, allowance)
            if state != PRESENT:
                if state in (ALREADY_GONE, NOT_OURS):
                    self.journal.mark_gone(key, state)
                return state
        self.journal.mark_sent(key)
        path = render_path(spec.delete.path, id=entry.id or "")
        reply = self.session.send(spec.delete.method, path, allowance)
        allowance.progress()
        if 200 <= reply.status < 300:
            self.journal.mark_gone(key, why)
            return DELETED
        if reply.status in spec.gone:
            self.journal.mark_gone(key, ALREADY_GONE)
            return ALREADY_GONE
        self.tally.error(f"{spec.delete.method} {path}: HTTP {reply.status}")
        return FAILED

    def _check(self, entry: LedgerEntry, spec: KindCleanup | None, allowance: Allowance) -> str:
        """``already_gone``, ``present`` (it carries the run tag), ``not_ours`` (the id is someone else's now),
        or ``unknown`` (it is there, but nothing says whose it is)."""
        path = render_path(spec.check.path, id=entry.id or "") if spec else self._recorded_path(entry)
        if path is None:
            return UNKNOWN
        reply = self.session.send("GET", path, allowance)
        allowance.progress()
        if reply.status in (spec.gone if spec else (404, 410)):
            return ALREADY_GONE
        if 200 <= reply.status < 300:
            if self.matcher.search(reply.text):
                return PRESENT
            # an entity that never carried the tag cannot be told from another's that took its id
            return NOT_OURS if self._tagged_kind(entry.kind) else UNKNOWN
        self.tally.error(f"GET {path}: HTTP {reply.status}")
        return UNKNOWN

    def _tagged_kind(self, kind: str) -> bool:
        """A kind whose entities carry the run tag: its search finds them by it, or its deletes verify it."""
        spec = self.kinds.get(kind)
        return spec is not None and (spec.search is not None or spec.verify_before_delete)

    def _recorded_path(self, entry: LedgerEntry) -> str | None:
        """The path a ledger record gives, when it is on the target (relative, or this target's own URL)."""
        url = entry.url or ""
        if url.startswith("/") and not url.startswith("//"):
            return url
        parts, target = urlsplit(url), urlsplit(self.base_url)
        if parts.scheme and (parts.scheme, parts.netloc) == (target.scheme, target.netloc) \
                and parts.path.startswith(target.path.rstrip("/")):
            return parts.path[len(target.path.rstrip("/")):] or "/"
        return None

    # -- 2. sweep what carries the run tag ---------------------------------------------------------
    def _sweep(self) -> str | None:
        """Delete what a search for the run tag still finds and the ledger did not record."""
        for kind, spec in self.kinds.items():
            if spec.search is None:
                continue
            allowance = self.timing.allowance(0)
            try:
                found = [e for e in self._tagged(kind, spec, allowance) if e.key not in self.ledger.entities]
            except (RequestFailed, OutOfTime) as exc:
                self.tally.error(f"sweep of {kind}: {exc}")
                continue
            found = [e for e in found if e.key not in self.journal.gone]
            outcomes, stopped = self._each(
                found, lambda e, s=spec, a=allowance: self._delete(e, s, a, verify=False, why="swept"),
                allowance, label="swept")
            self.swept += sum(1 for _, o in outcomes if o == DELETED)
            if stopped:
                return stopped
        return None

    def _tagged(self, kind: str, spec: KindCleanup, allowance: Allowance) -> list[LedgerEntry]:
        """Every entity the search lists that carries the run tag as a whole token."""
        assert spec.search is not None
        found = []
        for page in search_pages(self.session, spec.search, self.run_tag, allowance):
            for item in page:
                entity_id = value_at(item, spec.search.id) if isinstance(item, dict) else None
                if entity_id is not None and self.matcher.search(_text(item)):
                    found.append(LedgerEntry(kind=kind, id=str(entity_id)))
        return found

    # -- 3. prove what is left --------------------------------------------------------------------
    def _prove(self, recorded: list[LedgerEntry]) -> tuple[int | None, str]:
        left: int | None = 0
        proofs = set()
        by_kind: dict[str, list[LedgerEntry]] = {}
        for entry in recorded:
            by_kind.setdefault(entry.kind, []).append(entry)
        for kind in sorted(set(by_kind) | set(self.ledger.counted) | set(self.kinds)):
            kind_left, proof = self._prove_kind(kind, by_kind.get(kind, []))
            self._kind_proof[kind] = (kind_left, proof)
            proofs.add(proof)
            left = None if left is None or kind_left is None else left + kind_left
        if not by_kind and not self.ledger.counted and not self.kinds:
            left = None  # nothing declared, nothing recorded: nothing proves the run left nothing
            self.tally.error("no cleanup declared and nothing recorded as created: Stampede cannot tell what the "
                             "locustfile left; fix: declare creates and cleanup in the scenario "
                             "(docs/scenarios.md#test-data), or cleanup: none if it creates nothing")
        return left, "+".join(sorted(p for p in proofs if p)) or "none"

    def _prove_kind(self, kind: str, entries: list[LedgerEntry]) -> tuple[int | None, str]:
        spec = self.kinds.get(kind)
        failed = {e.key for e in entries if self._outcome_failed(e)}
        if spec is not None and spec.search is not None:
            allowance = self.timing.allowance(0)
            try:
                still = {e.key for e in self._tagged(kind, spec, allowance)}
            except (RequestFailed, OutOfTime) as exc:
                self.tally.error(f"could not count what is left of {kind}: {exc}")
                return None, "search"
            return len(still | failed), "search"
        if spec is None:
            self.tally.error(f"no cleanup declared for {kind} ({len(entries) + self.ledger.counted.get(kind, 0)} "
                             f"recorded as created): nothing deleted them; fix: declare cleanup.kinds.{kind}")
        if self.ledger.counted.get(kind):
            self.tally.error(f"{self.ledger.counted[kind]} {kind} recorded without an id and no search declared: "
                             f"cannot be found again; fix: record ids, or declare cleanup.kinds.{kind}.search")
            return None, "check"
        allowance = self.timing.allowance(len(entries))
        outcomes, _ = self._each(entries, lambda e: self._check(e, spec, allowance), allowance, label="checked")
        if any(o in (UNKNOWN, FAILED, STOPPED) for _, o in outcomes):
            unknown = sum(1 for _, o in outcomes if o in (UNKNOWN, FAILED, STOPPED))
            self.tally.error(f"{unknown} {kind} could not be checked")
            return None, "check" if spec else "none"
        return sum(1 for _, o in outcomes if o == PRESENT), "check" if spec else "none"

    def _outcome_failed(self, entry: LedgerEntry) -> bool:
        """A recorded entity cleanup was to delete, and did not see gone (failed, or stopped before it)."""
        return entry.key in self.ledger.entities and entry.key not in self.journal.gone and entry.kind in self.kinds

    # -- a hook instead of kinds -----------------------------------------------------------------------
    def _hook(self) -> CleanupResult:
        assert self.declaration is not None
        file, function = hook_parts(self.declaration.hook)
        allowance = self.timing.allowance(self.ledger.created)
        context = HookContext(
            base_url=self.base_url, run_tag=self.run_tag, entities=list(self.ledger.entities.values()),
            counted=dict(self.ledger.counted), already_gone=set(self.journal.gone),
            send=lambda method, path, body=None: self.session.send(method, path, allowance, body=body),
            is_ours=lambda text: bool(self.matcher.search(text)),
            mark_gone=lambda entry: self.journal.mark_gone(entry.key, DELETED),
        )
        try:
            spec = importlib.util.spec_from_file_location(f"stampede_cleanup_hook_{file.stem}", file)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            spec.loader.exec_module(module)  # type: ignore[union-attr]
            outcome = getattr(module, function)(context)
        except Exception as exc:  # noqa: BLE001 - the team's code: what went wrong goes to the results
            return self._result(left=None, proof="hook", errors=[f"cleanup hook {file.name}:{function} failed: "
                                                                 f"{type(exc).__name__}: {exc}"])
        outcome = outcome if isinstance(outcome, dict) else {}
        left = outcome.get("left")
        errors = [str(outcome["error"])] if outcome.get("error") else []
        if not isinstance(left, int) or isinstance(left, bool) or left < 0:
            left = None
            errors.append(f"cleanup hook {file.name}:{function} did not count what is left (return {{'left': n}})")
        result = self._result(left=left, proof="hook", errors=errors)
        result.deleted = int(outcome.get("deleted") or 0)
        return result

    # -- helpers ---------------------------------------------------------------------------------------
    def _each(self, items: Iterable[LedgerEntry], work: Callable[[LedgerEntry], str], allowance: Allowance, *,
              label: str) -> tuple[list[tuple[LedgerEntry, str]], str | None]:
        """``work(item)`` for every item, ``concurrency`` at once at most (the pace narrows it further).

        Submission is bounded, so a million entities never become a million futures;
        once the allowance runs out, the rest are ``stopped`` without a request.
        :returns: each item's outcome, and why the work stopped early (``None``: it did not).
        """
        items = list(items)
        outcomes: list[tuple[LedgerEntry, str]] = []
        stopped: list[str] = []
        if not items:
            return outcomes, None
        running: dict[Future, LedgerEntry] = {}
        last_log = time.monotonic()

        def guarded(entry: LedgerEntry) -> str:
            try:
                reason = stopped[0] if stopped else allowance.expired()
                if reason:
                    raise OutOfTime(reason)
                return work(entry)
            except OutOfTime as exc:
                stopped.append(str(exc))
                return STOPPED
            except RequestFailed as exc:
                self.tally.error(str(exc))
                return FAILED

        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="stampede-cleanup") as pool:
            queue = iter(items)
            for entry in queue:
                running[pool.submit(guarded, entry)] = entry
                while len(running) >= 2 * self.concurrency:
                    finished, _ = wait(running, timeout=PROGRESS_EVERY_S, return_when=FIRST_COMPLETED)
                    for future in finished:
                        outcomes.append((running.pop(future), future.result()))
                    if time.monotonic() - last_log >= PROGRESS_EVERY_S:
                        last_log = time.monotonic()
                        logger.info("cleanup %s: %s %d of %d", self.run_tag, label, len(outcomes), len(items))
            for future in list(running):
                outcomes.append((running.pop(future), future.result()))
        return outcomes, stopped[0] if stopped else None

    def _result(self, *, left: int | None, proof: str, errors: list[str], resumed: int = 0) -> CleanupResult:
        for message in errors:
            self.tally.error(message)
        totals: Counter = Counter()
        kinds = {}
        created = self.ledger.kinds()
        for kind in sorted(set(created) | set(self.tally.kinds) | set(self._kind_proof)):
            counts = self.tally.kinds.get(kind, Counter())
            totals.update(counts)
            kind_left, kind_proof = self._kind_proof.get(kind, (None, ""))
            by_run = sum(1 for k, _ in self.ledger.deleted_by_run if k == kind)
            kinds[kind] = CleanupKindResult(created=created.get(kind, 0), deleted=counts[DELETED],
                                            already_gone=counts[ALREADY_GONE] + by_run, left=kind_left,
                                            proof=kind_proof)
        error = self.tally.text()
        return CleanupResult(
            created=self.ledger.created, deleted=totals[DELETED] + self.swept, left=left,
            ok=left == 0 and error is None, error=error,
            already_gone=totals[ALREADY_GONE] + len(self.ledger.deleted_by_run), resumed=resumed,
            swept=self.swept, not_ours=totals[NOT_OURS], proof=proof, kinds=kinds, deletes_per_s=self.delete_rate,
        )


def _text(item: Any) -> str:
    return json.dumps(item, ensure_ascii=False)


def _kinds_text(kinds: dict[str, int]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
