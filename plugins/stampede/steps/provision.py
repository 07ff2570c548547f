"""Step 3, provision workers: the load generators of the run, recorded in ``workers.json``.

Local workers are agent processes on this machine; cloud workers (ECS Fargate
tasks, EC2 instances) are sized from the peak users and tagged with the run id
and an expiry. Idempotent: a retry reuses the run's live workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from stampede.core.paths import Artifact
from stampede.cost.estimate import worker_plan_for
from stampede.load.runner import locustfiles_for
from stampede.load.process_env import plan_process_env
from stampede.plan.local_ips import check_bindable
from stampede.plan.run_plan import RunPlan
from stampede.steps.folder import folder_of
from stampede.steps.preflight import WORKER_TTL_MARGIN_S
from stampede.workers import LocalWorkers, provider_for
from stampede.workers.local import check_open_files

log = logging.getLogger(__name__)


@dataclass
class Provisioned:
    provider: str
    count: int
    master_port: int | None = None
    size: str = ""
    spot: bool = False
    handles: list[str] = field(default_factory=list)


def is_cloud(plan: RunPlan) -> bool:
    return plan.worker_provider not in ("", "local")


def worker_ttl_s(plan: RunPlan) -> float:
    return plan.load_duration_s + WORKER_TTL_MARGIN_S


def provision_workers(plan: RunPlan) -> Provisioned:
    folder = folder_of(plan)
    if not is_cloud(plan):  # preflight may have run on another host: its addresses and limits must be this one's
        check_bindable(plan.local_ips)
        check_open_files(plan.peak_users, plan.workers)
    if plan.workers == 0:
        return Provisioned(provider="none", count=0)
    if is_cloud(plan):
        sizing = worker_plan_for(plan)
        workers = provider_for(plan.worker_provider).provision(
            run_id=plan.run_id, run_dir=folder.path, count=sizing.count, locustfiles=locustfiles_for(plan),
            ttl_s=worker_ttl_s(plan), scenario=plan.scenario_name, spot=sizing.spot, size=sizing.size,
        )
        folder.publish(Artifact.WORKERS)  # written by the provider; run_stages and teardown may run elsewhere
        folder.remove(Artifact.TEARDOWN)
        return Provisioned(provider=workers.provider, count=workers.count, master_port=workers.master_port,
                           size=sizing.size, spot=sizing.spot, handles=list(workers.handles))
    workers = LocalWorkers().provision(
        run_id=plan.run_id, run_dir=folder.path, count=plan.workers, locustfiles=locustfiles_for(plan),
        ttl_s=worker_ttl_s(plan), env=plan_process_env(plan),  # team locustfiles run there: no credentials
    )
    folder.publish(Artifact.WORKERS)
    return Provisioned(provider=workers.provider, count=workers.count, master_port=workers.master_port)
