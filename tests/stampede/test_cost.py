"""Cost: the estimate from the shipped price table, the budget refusal, the ledger and the actual cost."""

from __future__ import annotations

import json
from datetime import date

import boto3
import pytest

from stampede.cost import estimate as cost
from stampede.core.paths import Artifact
from stampede.state.ledger import default_ledger
from stampede.steps.cost_check import cost_check
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import load_scenario
from stampede.workers.sizing import plan_workers


def _plan(run_id: str, *, provider: str, users: int = 10_000, duration_s: int = 3600, spot: bool = False,
          out_dir=None) -> RunPlan:
    scenario = load_scenario("smoke").with_overrides(users=users, duration_s=duration_s)
    workers = plan_workers(users, provider=provider).count
    return RunPlan(run_id=run_id, target="http://127.0.0.1:9/v1", environment="local", scenarios=(scenario,),
                   workers=workers, worker_provider=provider, worker_spot=spot, out_dir=str(out_dir) if out_dir else None)


def test_the_shipped_price_table_is_dated_and_covers_the_common_regions():
    prices = cost.load_prices()
    assert date.fromisoformat(prices["as_of"])
    for region in ("us-east-1", "us-west-2", "eu-west-1", "eu-central-1"):
        table = prices["regions"][region]
        for market in ("on_demand", "spot"):
            assert table["fargate"][market]["vcpu_hour"] > 0 and table["fargate"][market]["gb_hour"] > 0
            assert {"c6i.large", "c7i.large", "m6i.large"} <= set(table["ec2"][market])
            assert table["ec2"]["spot"]["c6i.large"] < table["ec2"]["on_demand"]["c6i.large"]


@pytest.mark.parametrize(("provider", "spot", "expected"), [
    # 2 workers × (0.5 vCPU × 0.04048 + 1 GB × 0.004445) × 70 min + 10,000 × 1 h × 0.003 GB × 0.02 USD
    pytest.param("ecs", False, 2 * (0.5 * 0.04048 + 0.004445) * 70 / 60 + 0.6, id="ecs-on-demand"),
    pytest.param("ecs", True, 2 * (0.5 * 0.012144 + 0.0013335) * 70 / 60 + 0.6, id="ecs-spot"),
    pytest.param("ec2", False, 2 * 0.085 * 70 / 60 + 0.6, id="ec2-on-demand"),
    pytest.param("ec2", True, 2 * 0.034 * 70 / 60 + 0.6, id="ec2-spot"),
])
def test_estimate_for_a_10k_user_hour_in_us_east_1(provider, spot, expected):
    workers = plan_workers(10_000, provider=provider, spot=spot)
    result = cost.estimate(workers, load_duration_s=3600, peak_users=10_000, region="us-east-1",
                           prices=cost.load_prices(), today=date(2025, 7, 1))
    assert result.estimate_usd == pytest.approx(expected, abs=1e-3)
    assert result.workers == 2 and not result.prices_stale


def test_local_workers_cost_nothing():
    result = cost.estimate(plan_workers(10_000, provider="local"), load_duration_s=3600, peak_users=10_000,
                           region="us-east-1", prices=cost.load_prices())
    assert result.estimate_usd == 0


def test_prices_can_be_overridden_and_an_old_table_says_so(tmp_path, monkeypatch):
    override = tmp_path / "prices.yaml"
    override.write_text("as_of: '2020-01-01'\nregions: {us-east-1: {ec2: {on_demand: {c6i.large: 1.0}}}}\n")
    monkeypatch.setenv("STAMPEDE_PRICES_FILE", str(override))
    prices = cost.load_prices('{"data_transfer": {"usd_per_gb": 0}}')  # the Variable, as JSON
    result = cost.estimate(plan_workers(2500, provider="ec2"), load_duration_s=3000, peak_users=2500,
                           region="us-east-1", prices=prices)
    assert result.estimate_usd == pytest.approx(1.0)  # one worker-hour at the overridden price
    assert prices["regions"]["us-east-1"]["fargate"]["on_demand"]["vcpu_hour"] == 0.04048  # merged, not replaced
    assert result.prices_stale


def test_an_unknown_region_is_refused_with_a_fix():
    with pytest.raises(ValueError, match="ap-south-9.*fix"):
        cost.worker_hour_usd(plan_workers(10, provider="ecs"), region="ap-south-9", prices=cost.load_prices())


@pytest.mark.integration
def test_an_over_budget_run_is_refused_before_anything_starts(aws, tmp_path):
    plan = _plan("manual__over-budget", provider="ecs", users=20_000, duration_s=4 * 3600, out_dir=tmp_path)
    with pytest.raises(cost.BudgetExceeded, match="per-run budget of 1.00 USD.*fix"):
        cost_check(plan, budgets=cost.Budgets(run_usd=1.0, month_usd=100.0))
    assert not (tmp_path / "workers.json").exists()
    assert default_ledger().get(plan.run_id) is None
    ecs = boto3.client("ecs")
    assert ecs.list_tasks(cluster="stampede-workers", desiredStatus="RUNNING", startedBy="stampede")["taskArns"] == [] \
        or all("over-budget" not in json.dumps(t.get("tags"))
               for t in ecs.describe_tasks(cluster="stampede-workers", include=["TAGS"], tasks=ecs.list_tasks(
                   cluster="stampede-workers", desiredStatus="RUNNING")["taskArns"])["tasks"])


def test_the_monthly_budget_counts_what_was_spent_this_month(tmp_path, monkeypatch):
    monkeypatch.setenv("STAMPEDE_REPORTS_DIR", str(tmp_path / "reports"))
    import time

    from stampede.state.ledger import month_of

    default_ledger().record_estimate(run_id="earlier", provider="ec2", workers=4, size="c6i.large", estimate_usd=9.5)
    assert default_ledger().month_to_date(month=month_of(time.time())) == 9.5
    plan = _plan("manual__month", provider="ec2", users=6000, duration_s=3000, out_dir=tmp_path / "run")
    with pytest.raises(cost.BudgetExceeded, match="on top of 9.50 USD spent this month.*monthly budget of 9.80"):
        cost_check(plan, budgets=cost.Budgets(run_usd=5.0, month_usd=9.8))
    summary = cost_check(plan, budgets=cost.Budgets(run_usd=5.0, month_usd=20.0))
    assert summary["month_to_date_usd"] == 9.5 and summary["estimate_usd"] == pytest.approx(2 * 0.085 + 0.003 * 6000 * 3000 / 3600 * 0.02, abs=1e-3)
    assert json.loads((tmp_path / "run" / Artifact.COST_ESTIMATE).read_text())["estimate_usd"] == summary["estimate_usd"]
