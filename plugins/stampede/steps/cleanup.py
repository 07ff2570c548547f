"""Step 7, clean up test data: delete what the run's ledger recorded, and prove what is left.

A teardown task: it runs whatever happened before it, and again on a retry,
which continues where the last attempt stopped (the cleanup journal in the run
folder). The run's own files say what to do: every ``ledger.jsonl`` under the
run folder (a breaking-point search writes one per level), the plan's cleanup
declaration (``stampede.plan.cleanup_declaration``; the stock CRM's for the
stock journeys). ``left`` is always a count made after the deletes, or unknown
(``None``) when nothing could count it; ``ok`` is true only for a proved zero.
The outcome goes to ``cleanup.json`` and into results.json (when the run got
that far), before the report is written.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict

from stampede.cleanup.api import Credentials
from stampede.cleanup.ledger import Ledger, read_ledger
from stampede.cleanup.run_data import clean_run
from stampede.core.artifacts import RunFolder
from stampede.core.paths import Artifact
from stampede.core.records import CleanupResult
from stampede.plan.run_plan import RunPlan
from stampede.state import tags
from stampede.steps.folder import folder_of

log = logging.getLogger(__name__)

__all__ = ["cleanup_test_data", "run_ledger"]


def run_ledger(folder: RunFolder) -> Ledger:
    """Every ledger file of the run folder, merged (the master's, and one per breaking-point level)."""
    return read_ledger(folder.path.rglob(str(Artifact.LEDGER)))


def cleanup_test_data(plan: RunPlan) -> CleanupResult:
    """Delete what the run created; only once its load is proved stopped (else it raises, for a retry)."""
    from stampede.steps.run_stages import wait_until_load_stopped

    wait_until_load_stopped(plan)  # a delete while load still creates would leave what it creates next
    folder = folder_of(plan)
    result = folder.results() if folder.exists(Artifact.RESULTS) else None
    counted = result.cleanup.created if result else 0  # the load's own count, for a run with no ledger
    try:
        ledger = run_ledger(folder)
        if ledger.run_tag and ledger.run_tag != plan.run_tag:
            raise ValueError(f"the ledger in {folder.path} belongs to run tag {ledger.run_tag}, not {plan.run_tag}")
        cleanup = clean_run(
            base_url=plan.target, run_tag=plan.run_tag, declaration=plan.cleanup, ledger=ledger,
            journal_path=folder.file(Artifact.CLEANUP_JOURNAL),
            credentials=Credentials(password=os.environ.get(plan.password_env, ""), accounts=dict(plan.accounts)),
        )
        if ledger.files == 0 and counted:
            cleanup.created = counted
    except Exception as exc:  # noqa: BLE001 - reported in results and Slack; the caller decides to fail
        cleanup = CleanupResult(created=counted, left=None, ok=False, error=f"{type(exc).__name__}: {exc}")
    if result is not None:
        result.cleanup = cleanup
        folder.write_results(result)
    folder.write_json(Artifact.CLEANUP, asdict(cleanup))
    if cleanup.clean:
        tags.settle(plan.run_tag)  # proved gone: the reaper never needs to look at this run's target again
    else:
        log.error("Cleanup of run %s: %s entities left (%s)", plan.run_id,
                  "unknown" if cleanup.left is None else cleanup.left, cleanup.error)
    return cleanup
