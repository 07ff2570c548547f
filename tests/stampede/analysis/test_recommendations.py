"""Recommendations: where the target breaks, its capacity peak, and load generators that scale with the goal."""

from __future__ import annotations

import pytest

from stampede.analysis.recommendations import GOAL_USERS, MIN_SIGNAL_USERS_PER_PROCESS, recommend, workers_for
from stampede.core import fmt
from stampede.core.records import (
    BreakingPoint,
    CapacityModel,
    CostRecord,
    Finding,
    GeneratorHealth,
    RunResult,
    ServerSeries,
    ServerSummary,
    StageResult,
    StepFigures,
)
from stampede.workers import sizing


def stage(name: str, users: int, *, passed: bool = True, rps: float = 100.0, p95: float = 80.0) -> StageResult:
    return StageResult(name=name, scenario="x", users=users, duration_s=300, requests=30_000, failures=0, rps=rps,
                       p50_ms=20.0, p95_ms=p95, p99_ms=2 * p95, max_ms=4 * p95, error_rate=0.0, passed=passed)


def step(index: int, users: int, *, good: bool) -> StepFigures:
    return StepFigures(index=index, phase="step", level=float(users), users=users, duration_s=60, requests=6000,
                       rps=users / 5, p50_ms=20.0, p95_ms=80.0, p99_ms=160.0, error_rate=0.0, good=good)


def run(stages: list[StageResult], *, generator: GeneratorHealth | None = None, **extra) -> RunResult:
    return RunResult(run_id="r", scenario="x", target="http://127.0.0.1:1/v1", verdict="pass", started_at="",
                     finished_at="", stages=stages, generator=generator or GeneratorHealth(), **extra)


def test_the_breaking_point_says_where_the_target_breaks():
    result = run([stage("s", 800)], breaking_point=BreakingPoint(
        reason="p95 312 ms (must be < 200 ms)", found=True, users=800, level=800.0, first_bad_level=1000.0,
        first_bad_users=1000))

    holds = recommend(result).holds_now

    assert holds.startswith("The target holds 800 users within the thresholds (breaking-point search).")
    assert "It breaks at about 1,000 users." in holds


def test_without_the_searchs_figure_the_first_bad_step_gives_the_users():
    result = run([stage("s", 800)], steps=[step(0, 400, good=True), step(1, 800, good=True), step(2, 1600, good=False)],
                 breaking_point=BreakingPoint(reason="knee", found=True, users=800, level=800.0,
                                              first_bad_level=1600.0))

    assert "It breaks at about 1,600 users." in recommend(result).holds_now


def test_the_capacity_models_peak_is_named():
    capacity = CapacityModel(model="usl", lambda_rps=2.0, sigma=0.01, kappa=1e-5, r_squared=0.99, points=4,
                             max_measured_users=1000, peak_users=1500.4, peak_rps=700.0)

    holds = recommend(run([stage("low", 100), stage("high", 1000)], capacity=capacity)).holds_now

    assert "The target held 1,000 users within the thresholds in stage high (100.0 req/s, p95 80 ms)" in holds
    assert "puts the throughput peak at 1,500 users (700.0 req/s)." in holds


def test_a_small_run_plans_the_goal_from_the_bench_not_from_its_own_one_worker():
    generator = GeneratorHealth(cpu_max_pct=4.0, demand_max_pct=5.0, processes=1, workers=1, recommended_workers=1)

    plan = recommend(run([stage("s", 50)], generator=generator)).generators

    assert plan.workers == sizing.worker_count(GOAL_USERS) > 1
    assert plan.per_worker_users == sizing.USERS_PER_WORKER
    assert plan.text.startswith(f"For 10,000 users: {plan.workers} worker processes of 5,000 users each")
    assert "the project's bench" in plan.text
    assert "The health check's figure (1 worker) is for this run's own load (50 users), not for 10,000." in plan.text


def test_a_run_with_enough_users_a_process_plans_from_its_own_cpu_per_user():
    generator = GeneratorHealth(cpu_max_pct=28.0, demand_max_pct=30.0, processes=2, workers=1, limit_pct=85.0)

    plan = recommend(run([stage("s", 2_000)], generator=generator)).generators

    # 30 % of a core for 2,000 users is 150 % for 10,000: three workers under 75 % of the 85 % limit
    assert plan.workers == 3
    assert "from this run: a generator wanted 30 % of a core for 2,000 users" in plan.text


def test_a_run_at_the_goal_recommends_workers_for_the_goal():
    generator = GeneratorHealth(cpu_max_pct=65.0, demand_max_pct=70.0, processes=3, workers=2, recommended_workers=3)

    plan = recommend(run([stage("s", GOAL_USERS)], generator=generator)).generators

    assert plan.workers == 3  # 2 workers at 70 % → 140 % of a core in all → 3 under 63.75 % each
    assert plan.workers * plan.per_worker_users >= GOAL_USERS
    assert "health check" not in plan.text  # its figure is this run's, and this run is the goal


@pytest.mark.parametrize("saturated", [False, True], ids=["too-few-users", "saturated"])
def test_no_signal_falls_back_to_the_bench(saturated):
    users = MIN_SIGNAL_USERS_PER_PROCESS * 2 if saturated else MIN_SIGNAL_USERS_PER_PROCESS - 1
    generator = GeneratorHealth(cpu_max_pct=90.0, demand_max_pct=99.0, workers=1, saturated=saturated)

    workers, source = workers_for(GOAL_USERS, generator, measured_users=users)

    assert workers == sizing.worker_count(GOAL_USERS) and "bench" in source
    assert ("saturated" in source) == saturated


def test_the_goal_is_priced_like_the_runs_own_cloud_workers_and_in_usd():
    cost = CostRecord(provider="ec2", workers=1, size="m6i.large", spot=True, region="us-east-1", estimate_usd=0.0123)

    plan = recommend(run([stage("s", 50)], cost=cost)).generators

    assert plan.size == "m6i.large" and "ec2 m6i.large spot" in plan.text
    assert plan.cost_usd is not None and f"about {fmt.usd(plan.cost_usd)}" in plan.text
    assert "This run's own estimate was 0.0123 USD." in plan.text


def test_the_pool_action_names_the_pool_size_and_the_slow_endpoints():
    findings = [
        Finding("resource_saturated", "database pool", "Database connection pool exhausted", ["pool 8/8"], rank=1),
        Finding("latency_growth", "GET /listings", "GET /listings slows down", ["p95 ×4"], rank=2),
    ]
    server = ServerSummary(source="prometheus", series={"db_pool_size": ServerSeries(role="pool_size", max=8.0)})

    rec = recommend(run([stage("s", 500)], bottlenecks=findings, server=server))

    assert rec.limited_by == "Database connection pool exhausted: pool 8/8"
    assert rec.actions[0].startswith("Database pool: raise the pool size (now 8)")
    assert "(start with GET /listings)" in rec.actions[0]


def test_no_passing_stage_is_said_plainly():
    rec = recommend(run([stage("s", 500, passed=False)]))

    assert rec.holds_now.startswith("No stage of this run met its thresholds")
    assert rec.goal.text.startswith("Fix the failing stages")
