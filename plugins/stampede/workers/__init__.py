"""Load-generator workers: one interface, several providers (local processes by default).

A provider starts ``locust --worker`` processes that connect to the run's
master, records what it started in ``workers.json`` in the run folder (so
every later task, retry or reaper can find it), and tears it down again.
"""

from stampede.workers.base import WorkerSet, WorkerProvider, load_worker_set
from stampede.workers.local import LocalWorkers

__all__ = ["WorkerSet", "WorkerProvider", "LocalWorkers", "load_worker_set", "provider_for"]


def provider_for(name: str) -> WorkerProvider:
    if name == "local":
        return LocalWorkers()
    raise ValueError(f"workers.provider: unknown provider {name!r}; fix: use 'local'")
