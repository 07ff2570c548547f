"""The reaper task's logic: stale test data on every allowed target, then expired workers.

Airflow-free apart from reading the ``stampede_environments`` Variable when it
runs inside a task; the ``loadtest_reaper`` DAG only calls :func:`reap_everything`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["ReapFailed", "reap_everything"]


class ReapFailed(RuntimeError):
    """Stale test data could not be removed from at least one target."""


def reap_everything(*, older_than_s: float, extra_targets: list[str] | None = None) -> dict[str, Any]:
    """Reap stale data on every target, then expired workers; raise :class:`ReapFailed` if data is left."""
    from stampede.cleanup.reaper import reap_all_targets
    from stampede import workers
    from stampede.steps.pipeline import reports_root
    from stampede.plan.run_plan import DEFAULT_ACCOUNTS, PASSWORD_ENV

    environments_text = None
    if "airflow.sdk" in sys.modules:  # inside a task: the deployment's override, read at run time
        from stampede.plan.environments import airflow_override

        environments_text = airflow_override()
    data = reap_all_targets(
        older_than_s=older_than_s, extra_targets=extra_targets or [], environments_text=environments_text,
        password=os.environ.get(PASSWORD_ENV, ""), email=DEFAULT_ACCOUNTS["admin"], reports_dir=reports_root(),
    )
    reaped_workers: Any = "not available"
    if hasattr(workers, "reap_expired_workers"):  # cloud worker reaping, when the provider offers it
        reaped_workers = workers.reap_expired_workers()
    outcome = {"targets": data, "workers": reaped_workers}
    failed = {t: r.get("errors") or f"{r.get('left')} left" for t, r in data.items() if not r.get("ok")}
    for target, report in data.items():
        log.info("Reaped %s: %s", target, {k: v for k, v in report.items() if k != "errors"})
    if failed:
        raise ReapFailed(f"stale test data not removed: {failed}")
    return outcome
