"""Step 2, cost check: the workers' cloud cost estimated before any of them starts, refused over budget.

Local workers cost nothing and are never refused. A cloud run's estimate is
checked against the budgets and reserved in the ledger in one step, under the
month's lock in the shared state database (:meth:`CostLedger.reserve`), so two
runs on two hosts never both fit one month's budget; the actual cost replaces
the reservation after teardown (:mod:`stampede.steps.cost_actual`). The summary
goes to ``cost_estimate.json``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from stampede.core.paths import Artifact
from stampede.cost.estimate import Budgets, check_budget, estimate, load_prices, region, worker_plan_for
from stampede.plan.run_plan import RunPlan
from stampede.state.ledger import default_ledger, month_of
from stampede.steps.folder import folder_of

log = logging.getLogger(__name__)


def cost_check(plan: RunPlan, *, budgets: Budgets, prices_override: str | dict | None = None) -> dict[str, Any]:
    """The estimate and the budgets it was held to; raises :class:`~stampede.cost.estimate.BudgetExceeded`."""
    workers = worker_plan_for(plan)
    result = estimate(
        workers, load_duration_s=plan.load_duration_s, peak_users=plan.peak_users, region=region(),
        prices=load_prices(prices_override),
    )
    book = default_ledger()
    now = time.time()
    month = month_of(now)
    if workers.provider != "local":  # local workers cost nothing: never refused on cost
        spent = book.reserve(
            run_id=plan.run_id, provider=workers.provider, workers=workers.count, size=workers.size,
            estimate_usd=result.estimate_usd, now=now,
            check=lambda spent: check_budget(result.estimate_usd, budgets=budgets, month_to_date_usd=spent),
        )
    else:
        spent = book.month_to_date(month=month, exclude_run_id=plan.run_id)
    summary = result.to_dict() | {
        "month": month, "month_to_date_usd": round(spent, 4),
        "budget_run_usd": budgets.run_usd, "budget_month_usd": budgets.month_usd,
        "vcpu": workers.vcpu, "memory_gib": workers.memory_gib, "users_per_worker": workers.users_per_worker,
    }
    log.info(
        "Cost estimate: %d %s workers (%s%s) for %.2f h in %s = %.2f USD (prices as of %s); "
        "month to date %.2f of %.2f USD, run budget %.2f USD",
        workers.count, workers.provider, workers.size, ", spot" if workers.spot else "", result.hours,
        result.region, result.estimate_usd, result.prices_as_of, spent, budgets.month_usd, budgets.run_usd,
    )
    if result.prices_stale:
        log.warning("The price table is older than its max_age_days (as of %s); refresh infra/aws/prices.yaml",
                    result.prices_as_of)
    folder_of(plan).write_json(Artifact.COST_ESTIMATE, summary)
    return summary
