"""The worker provider interface and the persisted record of a run's workers."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

STATE_FILE = "workers.json"


@dataclass
class WorkerSet:
    """What a provider started for one run; persisted so teardown works from any process."""

    provider: str
    run_id: str
    count: int
    master_host: str
    master_port: int
    started_at: float
    expires_at: float
    handles: list[str] = field(default_factory=list)  # pids, task ARNs or instance ids
    locustfiles: str = ""

    def save(self, run_dir: Path) -> Path:
        path = run_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)
        return path


def load_worker_set(run_dir: Path) -> WorkerSet | None:
    path = run_dir / STATE_FILE
    if not path.exists():
        return None
    return WorkerSet(**json.loads(path.read_text()))


class WorkerProvider(Protocol):
    name: str

    def provision(self, *, run_id: str, run_dir: Path, count: int, locustfiles: str, ttl_s: float) -> WorkerSet:
        """Start ``count`` workers (idempotent: reuses live workers of the same run)."""

    def alive(self, workers: WorkerSet) -> list[str]:
        """Handles of the workers that are still running."""

    def teardown(self, workers: WorkerSet) -> list[str]:
        """Stop every worker of the run; return the handles still alive afterwards (should be none)."""
