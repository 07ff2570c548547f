"""After teardown: the run's actual cloud cost, from each worker's real lifetime, beside the estimate.

Recorded in the ledger (replacing the estimate's reservation for the month) and in
``cost.json``; the report step puts it into results.json and the report.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

from stampede.core.paths import Artifact
from stampede.core.records import CostRecord
from stampede.cost.estimate import actual_cost, load_prices, region, worker_plan_for
from stampede.plan.run_plan import RunPlan
from stampede.state.ledger import default_ledger
from stampede.steps.folder import folder_of

log = logging.getLogger(__name__)


def cost_actual(plan: RunPlan, *, prices_override: str | dict | None = None) -> CostRecord:
    """The actual cost from ``teardown.json``'s worker lifetimes and the requests sent."""
    folder = folder_of(plan)
    workers = worker_plan_for(plan)
    estimated = folder.read_json(Artifact.COST_ESTIMATE, default={})
    teardown = folder.read_json(Artifact.TEARDOWN, default={})
    requests = 0
    if folder.exists(Artifact.RESULTS):
        requests = sum(s.requests for s in folder.results().stages)
    prices = load_prices(prices_override)
    actual = actual_cost(workers, lifetimes_s=list(teardown.get("lifetimes_s") or []), requests=requests,
                         region=region(), prices=prices)
    cost = CostRecord(
        provider=workers.provider, workers=workers.count, size=workers.size, spot=workers.spot,
        region=estimated.get("region", region()), estimate_usd=estimated.get("estimate_usd"),
        actual_usd=actual["actual_usd"], actual_compute_usd=actual["compute_usd"],
        actual_data_transfer_usd=actual["data_transfer_usd"], worker_hours=actual["worker_hours"],
        prices_as_of=estimated.get("prices_as_of", prices.get("as_of")),
        recorded_at=datetime.now(tz=timezone.utc).isoformat(timespec="seconds"),
    )
    if workers.provider != "local":
        default_ledger().record_actual(run_id=plan.run_id, actual_usd=cost.actual_usd)
    folder.write_json(Artifact.COST, cost.__dict__)
    log.info("Actual cost of run %s: %.4f USD (estimate %s USD, %.3f worker-hours)", plan.run_id,
             cost.actual_usd, cost.estimate_usd, cost.worker_hours or 0.0)
    return cost
