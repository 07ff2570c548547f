"""Load-generator workers: one interface, several providers (local processes by default).

A provider starts ``locust --worker`` processes that connect to the run's
master, records what it started in ``workers.json`` in the run folder (so
every later task, retry or reaper can find it), and tears it down again.
"""

from stampede.workers.base import WorkerSet, WorkerProvider, load_worker_set
from stampede.workers.local import LocalWorkers

__all__ = [
    "WorkerSet", "WorkerProvider", "LocalWorkers", "load_worker_set", "provider_for", "reap_expired_workers",
]

PROVIDERS = ("local", "ecs", "ec2")


def provider_for(name: str) -> WorkerProvider:
    """The provider called ``name``: local processes (the default), ECS Fargate tasks or EC2 instances."""
    if name == "local":
        return LocalWorkers()
    if name == "ecs":
        from stampede.workers.ecs import EcsWorkers

        return EcsWorkers()
    if name == "ec2":
        from stampede.workers.ec2 import Ec2Workers

        return Ec2Workers()
    raise ValueError(f"workers.provider: unknown provider {name!r}; fix: use one of {', '.join(PROVIDERS)}")


def reap_expired_workers(now: float | None = None) -> list[str]:
    """Terminate every cloud worker past its ``stampede:expires_at``, whatever run started it."""
    from stampede.workers.reaper import reap_expired_workers as reap

    return reap(now)
