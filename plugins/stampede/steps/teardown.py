"""Step 8, tear down workers: stop every worker of the run, verify none is left, give the target back.

Cloud workers: everything tagged with the run id is stopped (not only what is
on record), then verified gone; ``teardown.json`` records what was stopped,
what is left and each worker's lifetime (the actual cost is computed from it).
A worker left alive fails the step, and the final verdict reads
``teardown.json`` so it fails the run visibly too; a teardown that fails for
any other reason (an AWS error, a crash) still writes ``teardown.json`` with its
error and ``left`` unknown, so the verdict knows workers may be alive. The
target's lease is given back, and the run's tag ended, only once no worker of
the run is alive.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from stampede.core.paths import Artifact
from stampede.plan.run_plan import RunPlan
from stampede.safety import lease
from stampede.state import tags
from stampede.steps.folder import folder_of
from stampede.steps.provision import is_cloud
from stampede.workers import LocalWorkers, load_worker_set, provider_for
from stampede.workers.base import WorkerSet

log = logging.getLogger(__name__)


class WorkersLeft(RuntimeError):
    """A worker of the run is still alive after teardown."""


@dataclass
class TornDown:
    provider: str
    stopped: int
    left: int | None  # None: unknown (the teardown failed before it could verify)
    left_handles: list[str] = field(default_factory=list)
    lifetimes_s: list[float] = field(default_factory=list)
    verified_at: float = 0.0
    error: str | None = None


def teardown_workers(plan: RunPlan) -> TornDown:
    """Stop every worker of the run and verify none is left; raises :class:`WorkersLeft` when one survives."""
    from stampede.steps.run_stages import wait_until_load_stopped

    folder = folder_of(plan)
    try:
        wait_until_load_stopped(plan)  # the lease goes back only once no load of the run flows
        summary = _teardown_cloud(plan) if is_cloud(plan) else _teardown_local(plan)
    except Exception as exc:
        folder.write_json(Artifact.TEARDOWN, asdict(TornDown(
            provider=plan.worker_provider, stopped=0, left=None, verified_at=time.time(),
            error=f"{type(exc).__name__}: {exc}"[:500])))
        raise
    folder.write_json(Artifact.TEARDOWN, asdict(summary))
    if summary.left:
        raise WorkersLeft(
            f"teardown: {summary.left} {summary.provider} workers of run {plan.run_id} are still alive: "
            f"{summary.left_handles}"
        )
    release_target(plan)
    return summary


def _teardown_local(plan: RunPlan) -> TornDown:
    folder = folder_of(plan)
    folder.write_text(Artifact.WORKERS_STOP, "teardown")  # first: agents of a half-finished provisioning stop too
    folder.fetch(Artifact.WORKERS)  # provisioned by another task, maybe on another host
    workers = load_worker_set(folder.path)
    if workers is None:
        return TornDown(provider="local", stopped=0, left=0, verified_at=time.time())
    left = LocalWorkers().teardown(workers)
    return TornDown(provider="local", stopped=workers.count, left=len(left), left_handles=left, verified_at=time.time())


def _teardown_cloud(plan: RunPlan) -> TornDown:
    folder = folder_of(plan)
    folder.fetch(Artifact.WORKERS)  # provisioned by another task, maybe on another host
    workers = load_worker_set(folder.path)
    provider = provider_for(plan.worker_provider)
    if workers is None:  # nothing on record (e.g. provisioning never ran): still sweep by tag
        workers = WorkerSet(provider=plan.worker_provider, run_id=plan.run_id, count=0, master_host="",
                            master_port=0, started_at=time.time(), expires_at=time.time())
    folder.write_text(Artifact.WORKERS_STOP, "teardown")
    left = provider.teardown(workers, run_dir=folder.path)
    stopped_at = time.time()
    lifetimes = provider.lifetimes(workers, stopped_at=stopped_at) if workers.handles else []
    if not left:
        log.info("Teardown verified: no %s worker tagged with run %s is running", plan.worker_provider, plan.run_id)
    return TornDown(provider=plan.worker_provider, stopped=len(workers.handles), left=len(left), left_handles=left,
                    lifetimes_s=lifetimes, verified_at=stopped_at)


def release_target(plan: RunPlan) -> bool:
    """Give the target's lease back and end the run's tag (idempotent); only once no worker of the run is alive."""
    released = lease.release(run_id=plan.run_id)
    tags.end(plan.run_tag)
    if released:
        log.info("Released the lease on %s held by run %s", plan.target, plan.run_id)
    return released


def teardown_problem(plan: RunPlan) -> str | None:
    """Why the final verdict must fail because of the teardown, if it must: a worker left, or no proof of none.

    No ``teardown.json`` means the teardown never finished (it was skipped, or
    its process died): whether workers are alive is unknown, which is not a pass.
    """
    summary = folder_of(plan).read_json(Artifact.TEARDOWN)
    if summary is None:
        return "teardown did not finish: workers of the run may still be running (see the teardown's log)"
    if summary.get("error"):
        return f"teardown failed ({summary['error']}): workers of the run may still be running"
    if summary.get("left") is None:
        return "teardown did not verify that no worker is left"
    if summary.get("left"):
        return f"workers still running after teardown: {summary.get('left_handles')}"
    return None
