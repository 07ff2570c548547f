"""A takeover try's first act: beat for the run's master before any slow work (``stampede.load.owner``).

Cheap to import on purpose (the run folder and the owner's rules only: 0.2 s measured): the Airflow
task calls it before it imports the load step and the notifier (3.9-4.0 s measured together).
"""

from __future__ import annotations

from stampede.load import owner
from stampede.plan.run_plan import RunPlan
from stampede.steps.folder import folder_of


def beat_first(plan: RunPlan) -> owner.Heartbeat | None:
    """This try's heartbeat, already beating, when it takes the run's running master over; else None."""
    return owner.beat_first(folder_of(plan).path, plan.run_tag)
