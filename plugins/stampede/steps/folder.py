"""Where a run's files live: its run folder, keyed by the run, and the deployment's shared folders.

Only the steps use this module: they are the only code that reads and writes a
run folder (domain modules take records and return records).
"""

from __future__ import annotations

from pathlib import Path

from stampede.core.artifacts import RunFolder
from stampede.core.paths import reports_root
from stampede.plan.run_plan import RunPlan, run_tag_for


def folder_of(plan: RunPlan) -> RunFolder:
    """``plan.out_dir`` when the CLI was given ``--out``, else ``<reports root>/<run tag>/``."""
    folder = RunFolder(Path(plan.out_dir) if plan.out_dir else reports_root() / plan.run_tag)
    folder.path.mkdir(parents=True, exist_ok=True)
    return folder


def folder_for_run(run_id: str) -> RunFolder:
    """The run folder of an Airflow run known only by its id (a callback, a refused run): the same as
    :func:`folder_of` for a plan without ``--out``."""
    folder = RunFolder(reports_root() / run_tag_for(run_id))
    folder.path.mkdir(parents=True, exist_ok=True)
    return folder


def locks_dir() -> Path:
    """The target leases (one file per target)."""
    return reports_root() / "locks"
