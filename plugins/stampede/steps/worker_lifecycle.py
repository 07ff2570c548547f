"""The pipeline's worker steps for cloud providers: provision, sample, tear down and verify, cost.

``stampede.steps.pipeline`` delegates here when the plan's ``worker_provider`` is not
``local``. The teardown stops everything tagged with the run id, then verifies
that nothing is left, writes ``teardown.json`` (which the final verdict reads, so
a failed verification fails the DAG run visibly) and records the actual cost.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from stampede.plan.run_plan import RunPlan
from stampede.workers import load_worker_set, provider_for
from stampede.workers.base import WorkerSet

log = logging.getLogger(__name__)

TEARDOWN_FILE = "teardown.json"


def is_cloud(plan: RunPlan) -> bool:
    return plan.worker_provider not in ("", "local")


def provision_cloud_workers(plan: RunPlan, run_dir: Path, *, ttl_s: float) -> dict:
    from stampede.cost.estimate import worker_plan_for
    from stampede.load.runner import locustfiles_for

    sizing = worker_plan_for(plan)
    provider = provider_for(plan.worker_provider)
    workers = provider.provision(
        run_id=plan.run_id, run_dir=run_dir, count=sizing.count, locustfiles=locustfiles_for(plan), ttl_s=ttl_s,
        scenario=plan.scenario_name, spot=sizing.spot, size=sizing.size,
    )
    (run_dir / TEARDOWN_FILE).unlink(missing_ok=True)
    return {"provider": workers.provider, "count": workers.count, "size": sizing.size, "spot": sizing.spot,
            "handles": workers.handles, "master_port": workers.master_port}


def worker_sampler(plan: RunPlan, run_dir: Path, workers: WorkerSet | None) -> Callable[[], list[psutil.Process]]:
    """What the Locust runner samples for generator health: the local processes of the workers, if any."""
    if workers is None:
        return list
    provider = provider_for(plan.worker_provider)
    if is_cloud(plan):
        return lambda: provider.processes(workers, run_dir)
    return lambda: provider.processes(workers)


def master_bind_host(plan: RunPlan) -> str:
    """Loopback for local workers and stand-ins; the configured interface when cloud workers connect."""
    if not is_cloud(plan):
        return "127.0.0.1"
    from stampede.workers.cloud import CloudConfig

    config = CloudConfig.from_env()
    return "127.0.0.1" if config.standin == "local" else config.master_bind_host


def teardown_cloud_workers(plan: RunPlan, run_dir: Path) -> dict:
    """Stop every resource tagged with the run id, verify none is running, record the actual cost."""
    from stampede.cost.estimate import record_actual_cost

    workers = load_worker_set(run_dir)
    provider = provider_for(plan.worker_provider)
    if workers is None:  # nothing on record (e.g. provisioning never ran): still sweep by tag
        workers = WorkerSet(provider=plan.worker_provider, run_id=plan.run_id, count=0, master_host="",
                            master_port=0, started_at=time.time(), expires_at=time.time())
    (run_dir / "workers.stop").write_text("teardown")
    left = provider.teardown(workers, run_dir=run_dir)
    stopped_at = time.time()
    summary = {
        "provider": plan.worker_provider, "run_id": plan.run_id, "stopped": len(workers.handles),
        "left": len(left), "left_handles": left, "verified_at": stopped_at,
    }
    (run_dir / TEARDOWN_FILE).write_text(json.dumps(summary, indent=2))
    try:
        lifetimes = provider.lifetimes(workers, stopped_at=stopped_at) if workers.handles else []
        summary["cost"] = record_actual_cost(plan, lifetimes_s=lifetimes)
    except (OSError, ValueError) as exc:  # the teardown's verdict matters more; the cost says why it is missing
        log.error("Could not record the actual cost of run %s: %s", plan.run_id, exc)
    if left:
        raise RuntimeError(
            f"teardown: {len(left)} {plan.worker_provider} workers of run {plan.run_id} are still running: {left}"
        )
    log.info("Teardown verified: no %s worker tagged with run %s is running", plan.worker_provider, plan.run_id)
    return summary


def teardown_problem(run_dir: Path) -> str | None:
    """Why the final verdict must fail because of the teardown, if it must."""
    path = run_dir / TEARDOWN_FILE
    if not path.exists():
        return None
    summary = json.loads(path.read_text())
    if summary.get("left"):
        return f"cloud workers still running after teardown: {summary.get('left_handles')}"
    return None
