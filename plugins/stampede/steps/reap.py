"""The reaper's step: stale test data on every target that allows load, then expired cloud workers.

The ``loadtest_reaper`` DAG calls :func:`reap_everything` once an hour, the
safety net behind each run's own cleanup.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from stampede import workers
from stampede.cleanup.reaper import reap_all_targets
from stampede.core.paths import reports_root
from stampede.plan.run_plan import DEFAULT_ACCOUNTS, PASSWORD_ENV

log = logging.getLogger(__name__)

__all__ = ["ReapFailed", "reap_everything"]


class ReapFailed(RuntimeError):
    """Stale test data could not be removed from at least one target."""


def reap_everything(*, older_than_s: float, extra_targets: list[str] | None = None,
                    environments_text: str | None = None) -> dict[str, Any]:
    """Reap stale data on every target, then expired workers; raise :class:`ReapFailed` if data is left.

    :param environments_text: the deployment's environments override (the Airflow Variable), if any.
    """
    data = reap_all_targets(
        older_than_s=older_than_s, extra_targets=extra_targets or [], environments_text=environments_text,
        password=os.environ.get(PASSWORD_ENV, ""), email=DEFAULT_ACCOUNTS["admin"], reports_dir=reports_root(),
    )
    reaped_workers = workers.reap_expired_workers()
    outcome = {"targets": data, "workers": reaped_workers}
    failed = {t: r.get("errors") or f"{r.get('left')} left" for t, r in data.items() if not r.get("ok")}
    for target, report in data.items():
        log.info("Reaped %s: %s", target, {k: v for k, v in report.items() if k != "errors"})
    if failed:
        raise ReapFailed(f"stale test data not removed: {failed}")
    return outcome
