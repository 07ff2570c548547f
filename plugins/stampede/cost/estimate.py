"""Cloud cost: an estimate before any worker starts, a budget check, and the actual cost after teardown.

    estimate = workers × price per worker-hour (size, region, on-demand|spot) × planned hours
             + peak users × planned hours × GB per user-hour × USD per GB
    actual   = Σ each worker's real lifetime × its price per hour + requests sent × KB per request × USD per GB

Prices come from the shipped, dated table ``infra/aws/prices.yaml`` (the AWS
Pricing API needs a real account and moto does not serve it), overridable by a
file (``STAMPEDE_PRICES_FILE``) or the Airflow Variable ``stampede_prices``.
Budgets: per run and per month (Airflow Variables ``stampede_budget_run_usd`` and
``stampede_budget_month_usd``, or ``STAMPEDE_BUDGET_*`` outside Airflow); the month
to date comes from :mod:`stampede.state.ledger`. Local workers cost nothing.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any

import yaml

from stampede.core.errors import Refusal
from stampede.workers.sizing import WorkerPlan, plan_workers
from stampede.core.paths import data_dir

log = logging.getLogger(__name__)

PRICES_FILE = data_dir("infra") / "aws" / "prices.yaml"
DEFAULT_RUN_BUDGET_USD = 25.0
DEFAULT_MONTH_BUDGET_USD = 300.0
# Beyond the load itself a worker lives through start-up, registration and teardown.
LIFETIME_OVERHEAD_S = 600


class BudgetExceeded(Refusal):
    """The estimate would exceed the per-run or the monthly budget; nothing was started."""


# -- prices -------------------------------------------------------------------------------------
def load_prices(override: str | dict | None = None) -> dict[str, Any]:
    """The shipped table, deep-merged with ``override`` (a dict, YAML/JSON text) and ``STAMPEDE_PRICES_FILE``."""
    prices = yaml.safe_load(PRICES_FILE.read_text())
    path = os.environ.get("STAMPEDE_PRICES_FILE")
    if path:
        prices = _merge(prices, yaml.safe_load(Path(path).read_text()) or {})
    if isinstance(override, str) and override.strip():
        override = yaml.safe_load(override)
    if isinstance(override, dict):
        prices = _merge(prices, override)
    return prices


def _merge(base: dict, extra: dict) -> dict:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
    return merged


def worker_hour_usd(workers: WorkerPlan, *, region: str, prices: dict[str, Any]) -> float:
    """Price of one worker for one hour."""
    if workers.provider == "local":
        return 0.0
    try:
        table = prices["regions"][region]
    except KeyError:
        raise ValueError(
            f"cost: no prices for region {region!r}; fix: add it to a prices override (STAMPEDE_PRICES_FILE)"
        ) from None
    market = "spot" if workers.spot else "on_demand"
    if workers.provider == "ecs":
        rates = table["fargate"][market]
        return workers.vcpu * float(rates["vcpu_hour"]) + workers.memory_gib * float(rates["gb_hour"])
    try:
        return float(table["ec2"][market][workers.size])
    except KeyError:
        raise ValueError(
            f"cost: no {market} price for {workers.size} in {region}; fix: add it to a prices override"
        ) from None


# -- estimate -----------------------------------------------------------------------------------
@dataclass
class CostEstimate:
    provider: str
    region: str
    workers: int
    size: str
    spot: bool
    hours: float
    worker_hour_usd: float
    compute_usd: float
    data_transfer_usd: float
    estimate_usd: float
    prices_as_of: str
    prices_stale: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def estimate(
    workers: WorkerPlan, *, load_duration_s: float, peak_users: int, region: str, prices: dict[str, Any],
    today: date | None = None,
) -> CostEstimate:
    hours = (load_duration_s + LIFETIME_OVERHEAD_S) / 3600 if workers.provider != "local" else 0.0
    per_hour = worker_hour_usd(workers, region=region, prices=prices)
    compute = workers.count * per_hour * hours
    transfer = prices.get("data_transfer", {})
    load_hours = load_duration_s / 3600 if workers.provider != "local" else 0.0
    data = peak_users * load_hours * float(transfer.get("gb_per_user_hour", 0)) * float(transfer.get("usd_per_gb", 0))
    as_of = str(prices.get("as_of", "unknown"))
    return CostEstimate(
        provider=workers.provider, region=region, workers=workers.count, size=workers.size, spot=workers.spot,
        hours=round(hours, 4), worker_hour_usd=round(per_hour, 6), compute_usd=round(compute, 4),
        data_transfer_usd=round(data, 4), estimate_usd=round(compute + data, 4), prices_as_of=as_of,
        prices_stale=_stale(as_of, int(prices.get("max_age_days", 365)), today or date.today()),
    )


def _stale(as_of: str, max_age_days: int, today: date) -> bool:
    try:
        return (today - date.fromisoformat(as_of)).days > max_age_days
    except ValueError:
        return True


def actual_cost(
    workers: WorkerPlan, *, lifetimes_s: list[float], requests: int, region: str, prices: dict[str, Any],
) -> dict[str, float]:
    """Cost from each worker's real lifetime (seconds) and the requests the load actually sent."""
    per_hour = worker_hour_usd(workers, region=region, prices=prices)
    compute = sum(max(60.0, s) for s in lifetimes_s) / 3600 * per_hour if workers.provider != "local" else 0.0
    transfer = prices.get("data_transfer", {})
    kb = float(transfer.get("kb_per_request", 4))
    data = requests * kb / 1e6 * float(transfer.get("usd_per_gb", 0)) if workers.provider != "local" else 0.0
    return {"compute_usd": round(compute, 4), "data_transfer_usd": round(data, 4), "actual_usd": round(compute + data, 4),
            "worker_hours": round(sum(lifetimes_s) / 3600, 4)}


# -- budget -------------------------------------------------------------------------------------
@dataclass
class Budgets:
    run_usd: float = DEFAULT_RUN_BUDGET_USD
    month_usd: float = DEFAULT_MONTH_BUDGET_USD

    @classmethod
    def from_env(cls) -> Budgets:
        return cls(
            run_usd=float(os.environ.get("STAMPEDE_BUDGET_RUN_USD") or DEFAULT_RUN_BUDGET_USD),
            month_usd=float(os.environ.get("STAMPEDE_BUDGET_MONTH_USD") or DEFAULT_MONTH_BUDGET_USD),
        )


def check_budget(estimate_usd: float, *, budgets: Budgets, month_to_date_usd: float) -> None:
    """Raise :class:`BudgetExceeded` when the run would break either budget."""
    if estimate_usd > budgets.run_usd:
        raise BudgetExceeded(
            f"cost: estimate {estimate_usd:.2f} USD exceeds the per-run budget of {budgets.run_usd:.2f} USD; "
            "fix: fewer users or a shorter run, spot workers, or raise the Airflow Variable stampede_budget_run_usd"
        )
    if month_to_date_usd + estimate_usd > budgets.month_usd:
        raise BudgetExceeded(
            f"cost: estimate {estimate_usd:.2f} USD on top of {month_to_date_usd:.2f} USD spent this month exceeds "
            f"the monthly budget of {budgets.month_usd:.2f} USD; fix: wait for next month or raise the Airflow "
            "Variable stampede_budget_month_usd"
        )


# -- a plan's workers ---------------------------------------------------------------------------
def worker_plan_for(plan) -> WorkerPlan:
    """The plan's workers: provider, count (the plan's, already derived or overridden) and size."""
    return plan_workers(
        plan.peak_users, provider=plan.worker_provider, count=plan.workers or None, spot=plan.worker_spot,
        size=plan.worker_size or None,
    )


def region() -> str:
    from stampede.hooks.aws import DEFAULT_REGION

    return os.environ.get("STAMPEDE_AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
