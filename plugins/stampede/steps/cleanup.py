"""Step 7, clean up test data: delete every entity the run created, by its run tag, and prove none is left.

A teardown task: it runs whatever happened before it. ``left`` is always a
count made after the deletes, or unknown (``None``) when it could not be made;
either way ``ok`` is true only for a proved zero. The outcome goes to
``cleanup.json`` and into results.json (when the run got that far).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict

from stampede.cleanup.run_data import CleanupError, cleanup_run_data
from stampede.core.paths import Artifact
from stampede.core.records import CleanupResult
from stampede.plan.run_plan import RunPlan
from stampede.steps.folder import folder_of

log = logging.getLogger(__name__)


def cleanup_test_data(plan: RunPlan) -> CleanupResult:
    folder = folder_of(plan)
    result = folder.results() if folder.exists(Artifact.RESULTS) else None
    created = result.cleanup.created if result else 0
    try:
        report = cleanup_run_data(
            base_url=plan.target, run_tag=plan.run_tag, email=plan.accounts["admin"],
            password=os.environ.get(plan.password_env, ""),
        )
        cleanup = CleanupResult(created=created, deleted=report.deleted, left=report.left,
                                ok=report.left == 0 and not report.errors, error="; ".join(report.errors) or None)
    except CleanupError as exc:  # it could not prove what is left: unknown, not zero
        cleanup = CleanupResult(created=created, deleted=exc.report.deleted, left=None, ok=False, error=str(exc))
    except Exception as exc:  # noqa: BLE001 - reported in results and Slack; the caller decides to fail
        cleanup = CleanupResult(created=created, left=None, ok=False, error=f"{type(exc).__name__}: {exc}")
    if result is not None:
        result.cleanup = cleanup
        folder.write_results(result)
    folder.write_json(Artifact.CLEANUP, asdict(cleanup))
    if not cleanup.clean:
        log.error("Cleanup of run %s: %s entities left (%s)", plan.run_id,
                  "unknown" if cleanup.left is None else cleanup.left, cleanup.error)
    return cleanup
