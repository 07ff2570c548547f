"""The reaper's step: what ended runs left, on every target that allows load, then expired cloud workers.

The ``loadtest_reaper`` DAG calls :func:`reap_everything` once an hour, the
safety net behind each run's own cleanup. It acts only for run tags Stampede
issued whose runs have ended (``stampede.state.tags``), at least
``older_than_s`` ago, and only through cleanup declarations:

1. **Runs whose cleanup is not proved**: a run folder (``reports/<tag>/``) with
   a ledger and no clean ``cleanup.json`` gets its cleanup resumed, from the
   ledger's header (target, declaration) and the run's own journal;
2. **Sweeps**: every target of an environment that allows load (plus
   ``reaper_targets``) with the stock CRM declaration, and every target a run's
   ledger names with that run's declaration, is searched for entities carrying
   an issued, ended tag as a whole token, which are deleted and counted again.

Every target must pass the same check as a load run (``resolve_target``): the
reaper never touches production, nor a host no environment lists.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select

from stampede import workers
from stampede.cleanup.api import Credentials
from stampede.cleanup.reaper import reap_target
from stampede.cleanup.run_data import clean_run
from stampede.core.artifacts import RunFolder
from stampede.core.paths import Artifact, reports_root
from stampede.plan.cleanup_declaration import CleanupDeclaration, stock_declaration
from stampede.plan.environments import TargetRefused, load_environments, resolve_target
from stampede.plan.run_plan import DEFAULT_ACCOUNTS, PASSWORD_ENV
from stampede.state import db, tags
from stampede.steps.cleanup import run_ledger

log = logging.getLogger(__name__)

__all__ = ["ReapFailed", "ended_tags", "reap_everything"]


class ReapFailed(RuntimeError):
    """What ended runs left could not be removed (or counted) on at least one target."""


def ended_tags(older_than_s: float, *, now: datetime | None = None) -> set[str]:
    """The run tags Stampede issued whose runs ended at least ``older_than_s`` ago."""
    ended = tags.issued(ended=True)
    if older_than_s <= 0 or not ended:
        return ended
    cutoff = ((now or datetime.now(timezone.utc)) - timedelta(seconds=older_than_s)).isoformat(timespec="seconds")
    table = tags.run_tags
    with db.engine(tables=(table,)).connect() as conn:
        rows = conn.execute(select(table.c.tag, table.c.ended_at).where(table.c.ended_at.is_not(None)))
        return {row.tag for row in rows if row.ended_at <= cutoff and row.tag in ended}


def reap_everything(*, older_than_s: float, extra_targets: list[str] | None = None,
                    environments_text: str | None = None) -> dict[str, Any]:
    """Reap what ended runs left, then expired workers; raise :class:`ReapFailed` if anything is left.

    :param environments_text: the deployment's environments override (the Airflow Variable), if any.
    """
    environments = load_environments(environments_text)
    reapable = ended_tags(older_than_s)
    credentials = Credentials(password=os.environ.get(PASSWORD_ENV, ""), accounts=dict(DEFAULT_ACCOUNTS))
    sweeps: dict[tuple[str, str], CleanupDeclaration] = {}
    for env in environments.values():
        for url in env.base_urls if env.allow_load else ():
            sweeps[(url.rstrip("/"), "stock")] = stock_declaration()
    for url in extra_targets or ():
        sweeps[(url.rstrip("/"), "stock")] = stock_declaration()

    runs: dict[str, dict[str, Any]] = {}
    for tag in sorted(reapable):
        folder = RunFolder(reports_root() / tag)
        if not folder.path.is_dir():
            continue
        ledger = run_ledger(folder)
        if not ledger.files or not ledger.target or ledger.run_tag != tag:
            continue
        declaration = CleanupDeclaration.from_dict(ledger.cleanup) if ledger.cleanup else None
        if declaration is not None and not declaration.creates_nothing and declaration.kinds:
            sweeps.setdefault((ledger.target, json.dumps(declaration.to_dict(), sort_keys=True)), declaration)
        done = folder.read_json(Artifact.CLEANUP) or {}
        if done.get("ok") and done.get("left") == 0:
            continue  # its own cleanup proved it clean
        try:
            resolve_target(ledger.target, environments)
            result = clean_run(base_url=ledger.target, run_tag=tag, declaration=declaration, ledger=ledger,
                               journal_path=folder.file(Artifact.CLEANUP_JOURNAL), credentials=credentials)
            folder.write_json(Artifact.CLEANUP, asdict(result))
            runs[tag] = {"target": ledger.target, "ok": result.clean, "left": result.left, "deleted": result.deleted,
                         "errors": [result.error] if result.error else []}
        except (TargetRefused, ValueError) as exc:
            runs[tag] = {"target": ledger.target, "ok": False, "left": None, "errors": [str(exc)]}

    targets: dict[str, dict[str, Any]] = {}
    for (target, _), declaration in sweeps.items():
        try:
            resolve_target(target, environments)
        except TargetRefused as exc:
            targets[target] = {"ok": False, "errors": [str(exc)]}
            log.warning("reaper %s: %s", target, exc)
            continue
        report = reap_target(base_url=target, declaration=declaration, tags=reapable, credentials=credentials)
        previous = targets.get(target)
        targets[target] = report.to_dict() if previous is None else _merged(previous, report.to_dict())

    reaped_workers = workers.reap_expired_workers()
    outcome = {"tags": len(reapable), "runs": runs, "targets": targets, "workers": reaped_workers}
    for target, report in targets.items():
        log.info("Reaped %s: %s", target, {k: v for k, v in report.items() if k != "errors"})
    failed = {t: r.get("errors") or f"{r.get('left')} left" for t, r in {**runs, **targets}.items() if not r.get("ok")}
    if failed:
        raise ReapFailed(f"what ended runs left was not removed: {failed}")
    return outcome


def _merged(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two sweeps of one target (the stock declaration and a run's own)."""
    left = None if a.get("left") is None or b.get("left") is None else a["left"] + b["left"]
    merged = {k: a.get(k, 0) + b.get(k, 0) for k in ("found", "deleted", "lookalikes")}
    errors = list(a.get("errors") or []) + list(b.get("errors") or [])
    return {**a, **merged, "left": left, "errors": errors, "ok": left == 0 and not errors}
