"""Where a run's files live: its run folder, keyed by the run, and the deployment's shared folders.

Only the steps use this module: they are the only code that reads and writes a
run folder (domain modules take records and return records). A run folder is
``<reports root>/<run tag>/`` on the host that runs the step, and, when the
deployment configures object storage (``STAMPEDE_ARTIFACTS_URL``), the same
run tag under the store, which every host reads and writes
(:mod:`stampede.core.artifacts`).
"""

from __future__ import annotations

from pathlib import Path

from stampede.core.artifacts import RunFolder, store_root
from stampede.core.paths import reports_root
from stampede.plan.run_plan import RunPlan, run_tag_for


def folder_of(plan: RunPlan) -> RunFolder:
    """``plan.out_dir`` when the CLI was given ``--out`` (local only), else the run's folder (:func:`folder_for_run`)."""
    folder = RunFolder(Path(plan.out_dir)) if plan.out_dir else folder_for_run(plan.run_id, dag_id=plan.dag_id)
    folder.path.mkdir(parents=True, exist_ok=True)
    return folder


def folder_for_run(run_id: str, *, dag_id: str = "") -> RunFolder:
    """``<reports root>/<run tag>/`` on this host, and ``<store>/<run tag>/`` when a store is configured.

    The run tag is unique per DAG id and run id (:func:`stampede.plan.run_plan.run_tag_for`).
    """
    tag = run_tag_for(run_id, dag_id)
    store = store_root()
    return RunFolder(reports_root() / tag, store / tag if store is not None else None)


def locks_dir() -> Path:
    """The target leases (one file per target)."""
    return reports_root() / "locks"
