"""What every Stampede DAG shares: owner, failure alerts, no catch-up, one run at a time.

Kept apart from ``airflow_tasks`` so that DAG files which define no pipeline
tasks (the reaper) import as little as possible at parse time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from stampede.surfaces.callbacks import task_failure_callback


def dag_defaults() -> dict[str, Any]:
    """Keyword arguments for ``@dag``: spread them, then add the DAG's own id, schedule and params."""
    return {
        "start_date": datetime(2026, 1, 1),
        "catchup": False,
        "max_active_runs": 1,
        "default_args": {
            "owner": "platform-sre",
            "retries": 0,
            "retry_delay": timedelta(seconds=30),
            "on_failure_callback": task_failure_callback,
        },
    }
