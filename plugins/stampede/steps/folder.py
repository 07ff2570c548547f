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
from stampede.plan.run_plan import RunPlan


def folder_of(plan: RunPlan) -> RunFolder:
    """``plan.out_dir`` when the CLI was given ``--out`` (local only), else ``<reports root>/<run tag>/`` (+ the store)."""
    if plan.out_dir:
        folder = RunFolder(Path(plan.out_dir))
    else:
        store = store_root()
        folder = RunFolder(reports_root() / plan.run_tag, store / plan.run_tag if store is not None else None)
    folder.path.mkdir(parents=True, exist_ok=True)
    return folder


def locks_dir() -> Path:
    """The target leases (one file per target)."""
    return reports_root() / "locks"
