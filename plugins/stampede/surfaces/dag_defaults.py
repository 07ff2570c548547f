"""What every Stampede DAG shares: owner, failure alerts, no catch-up, one run at a time, time limits.

Kept apart from ``airflow_tasks`` so that DAG files which define no pipeline
tasks (the reaper) import as little as possible at parse time.

Time limits: ``dagrun_timeout`` (:data:`stampede.surfaces.timeouts.DAGRUN_TIMEOUT`) ends a run that hangs,
so ``max_active_runs=1`` cannot hold every later run forever (the DAG's failure callback tells Slack); the
deadline alert tells Slack when a run is still going 30 minutes past the average of the DAG's last 10
successful runs (from 3 such runs on; before that there is no deadline). The triggerer awaits the alert,
so its callback is importable from the installed package, never from a DAG file.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

from stampede.surfaces.airflow_compat import allow_deadlines_under_dag_test
from stampede.surfaces.callbacks import StampedeAlertNotifier, failure_alert
from stampede.surfaces.timeouts import DAGRUN_TIMEOUT

allow_deadlines_under_dag_test()  # else a passing dag.test() run crashes on the deadline (see airflow_compat)

LATE_AFTER_AVERAGE = timedelta(minutes=30)


def dag_defaults() -> dict[str, Any]:
    """Keyword arguments for ``@dag``: spread them, then add the DAG's own id, schedule and params."""
    return {
        "start_date": datetime(2026, 1, 1),
        "catchup": False,
        "max_active_runs": 1,
        "dagrun_timeout": DAGRUN_TIMEOUT,
        "deadline": DeadlineAlert(
            reference=DeadlineReference.AVERAGE_RUNTIME(max_runs=10, min_runs=3),
            interval=LATE_AFTER_AVERAGE,
            callback=AsyncCallback(StampedeAlertNotifier),
        ),
        "on_failure_callback": failure_alert,
        "default_args": {
            "owner": "platform-sre",
            "retries": 0,
            "retry_delay": timedelta(seconds=30),
            "on_failure_callback": failure_alert,
        },
    }
