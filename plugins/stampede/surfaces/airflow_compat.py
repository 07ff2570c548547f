"""Work-arounds for Airflow 3.3.2 bugs that Stampede's DAGs would otherwise hit; each says when it can go.

:func:`allow_deadlines_under_dag_test`: ``dag.test()`` (and so ``airflow dags test`` and ``make demo``)
builds its scheduler DAG straight from the DAG file, so the DAG's ``deadline`` still holds the alerts'
definitions where a DAG read from the metadata DB holds their ids (``SerializedDagModel`` swaps them for
UUIDs when it stores a DAG). When such a run *succeeds*, ``DagRun.update_state`` looks every entry up with
``DeadlineAlert.get_by_id`` and crashes (``AttributeError: 'dict' object has no attribute 'hex'``), so a
passing run ends in a traceback. Measured on 3.3.2 with the nightly DAG; a failing run never reaches that
code. The shim answers a definition with an unsaved ``DeadlineAlert`` made from it (the pruning that follows
reads only its reference) and leaves every real id to Airflow. Remove it when ``dag.test()`` stores its DAG
through ``SerializedDagModel`` (no upstream issue was found for it on 2026-12-01).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def allow_deadlines_under_dag_test() -> None:
    """Install the shim once per process (a no-op where Airflow's core models are not installed)."""
    try:
        from airflow.models.deadline_alert import DeadlineAlert
    except ImportError:  # a task-SDK-only worker never runs dag.test()
        return
    original = DeadlineAlert.get_by_id
    if getattr(original, "stampede_compat", False):
        return

    def get_by_id(deadline_alert_id: Any, **kwargs: Any) -> Any:
        if isinstance(deadline_alert_id, dict):  # a definition: only dag.test() passes these
            data = deadline_alert_id.get("__var", deadline_alert_id)
            return DeadlineAlert(name=data.get("name"), reference=data["reference"], interval=data["interval"],
                                 callback_def=data["callback"])
        return original(deadline_alert_id, **kwargs)

    get_by_id.stampede_compat = True  # type: ignore[attr-defined]
    DeadlineAlert.get_by_id = get_by_id  # type: ignore[method-assign]
