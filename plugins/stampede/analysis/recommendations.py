"""Scaling recommendations: what the target holds now, what limits it, what to change for 10,000 users.

Built from the run's stages, its ranked bottlenecks and, when the run has them,
its breaking point, capacity model, server metrics, generator health and cost.
Every number says where it comes from; an extrapolation says it is one.

The load generators for the goal scale with the goal's users, never with this
run's: the health check's ``recommended_workers`` is what *this* run's load
needed (a 50-user run needs one worker, 10,000 users do not). The plan is made
from the run's own CPU per user when the run put enough users on each process
to measure it, else from the project's benchmarked capacity per worker
(:mod:`stampede.workers.sizing`).
"""

from __future__ import annotations

import math

from stampede.core import fmt
from stampede.core.records import (
    BreakingPoint,
    Finding,
    GeneratorHealth,
    GeneratorPlan,
    Goal,
    Recommendations,
    RunResult,
    ServerSummary,
    StageResult,
)
from stampede.cost import estimate as cost
from stampede.figures.generator import HEADROOM, recommended_workers
from stampede.workers import sizing

__all__ = ["GOAL_USERS", "MIN_SIGNAL_USERS_PER_PROCESS", "recommend", "workers_for"]

GOAL_USERS = 10_000  # the seed's success metric
# Below this many users a process's own fixed cost (stats, the master link, the sampler) weighs as much as
# its users' (the bench: 7,500 users took 0.59 of a core, about 8 % per 1,000), so CPU per user is noise.
MIN_SIGNAL_USERS_PER_PROCESS = 1_000
DEFAULT_PROVIDER = "ecs"  # a goal run is planned on Fargate unless this run used other cloud workers


def recommend(result: RunResult) -> Recommendations:
    """results.json ``recommendations``: what holds now, what limits it, the goal and its load generators."""
    loaded = [s for s in result.stages if s.requests]
    passing = [s for s in loaded if s.judged and s.valid and s.passed]
    holds, holds_text = _holds_now(result, passing)
    top = next((b for b in result.bottlenecks if b.kind != "slow_endpoint"),
               result.bottlenecks[0] if result.bottlenecks else None)
    limited_by = (f"{top.title}: {top.evidence[0]}" if top and top.evidence else
                  "No bottleneck showed at this load: push further (breaking-point DAG) to find one.")
    return Recommendations(
        holds_now=holds_text, limited_by=limited_by, goal=_goal(holds, passing or loaded),
        generators=_generators(result), actions=_actions(result.bottlenecks, result.server),
    )


def _holds_now(result: RunResult, passing: list[StageResult]) -> tuple[int | None, str]:
    """(users the target holds, the sentence that says so, with where it breaks and the capacity model)."""
    point = result.breaking_point
    if point is not None and point.users is not None:
        holds: int | None = point.users
        text = f"The target holds {fmt.count(holds)} users within the thresholds (breaking-point search)."
    elif passing:
        best = max(passing, key=lambda s: s.users)
        holds = best.users
        text = (f"The target held {fmt.count(holds)} users within the thresholds in stage {best.name} "
                f"({fmt.rps(best.rps)}, p95 {fmt.ms(best.p95_ms)}); this run did not look beyond that.")
    else:
        holds = None
        text = "No stage of this run met its thresholds: the target does not hold the lowest load tried."
    broke = _first_bad_users(point, result) if point is not None else None
    if broke is not None:
        text += f" It breaks at about {fmt.count(broke)} users."
    capacity = result.capacity
    if capacity is not None and capacity.peak_users is not None:
        text += (f" The capacity model ({capacity.model}) puts the throughput peak at {fmt.count(capacity.peak_users)} "
                 f"users" + (f" ({fmt.rps(capacity.peak_rps)})." if capacity.peak_rps is not None else "."))
    elif capacity is not None and capacity.peak_rps is not None:
        text += (f" The capacity model ({capacity.model}) has the throughput flatten towards "
                 f"{fmt.rps(capacity.peak_rps)}.")
    return holds, text


def _first_bad_users(point: BreakingPoint, result: RunResult) -> int | None:
    """Users of the first level that failed: the search's own figure, else that level's step."""
    if point.first_bad_users is not None:
        return point.first_bad_users
    if point.first_bad_level is None:
        return None
    return next((s.users for s in result.steps if s.level == point.first_bad_level), None)


def _goal(holds: int | None, stages: list[StageResult]) -> Goal:
    if not holds:
        return Goal(users=GOAL_USERS, text=f"Fix the failing stages before planning for {fmt.count(GOAL_USERS)} users.")
    ratio = GOAL_USERS / holds
    if ratio <= 1:
        return Goal(users=GOAL_USERS, factor=round(ratio, 1),
                    text=f"{fmt.count(GOAL_USERS)} users are within what the target holds now.")
    best = max(stages, key=lambda s: s.users) if stages else None
    rps_per_user = best.rps / best.users if best and best.users else None
    text = (
        f"{fmt.count(GOAL_USERS)} users is ×{ratio:.1f} the load held now"
        + (f" (about {fmt.rps(rps_per_user * GOAL_USERS)} at this run's think times)" if rps_per_user else "")
        + f": if the target scaled linearly it would need about {math.ceil(ratio)}× its current capacity "
        "once the limit above is removed (an extrapolation: verify with the breaking-point DAG)."
    )
    return Goal(users=GOAL_USERS, factor=round(ratio, 1), text=text)


def _pool_size(server: ServerSummary | None) -> float | None:
    if server is None:
        return None
    return next((s.max for s in server.series.values() if s.role == "pool_size" and s.max is not None), None)


def _actions(bottlenecks: list[Finding], server: ServerSummary | None) -> list[str]:
    actions: list[str] = []
    slow = [b.subject for b in bottlenecks if b.kind in ("latency_growth", "slow_endpoint")]
    for b in bottlenecks:
        kind, subject = b.kind, b.subject
        if kind == "generator_saturated":
            actions.append("Add load-generator workers and run again: this run measured the generator, not the target.")
        elif kind == "resource_saturated" and subject == "database pool":
            size = _pool_size(server)
            actions.append(
                "Database pool: raise the pool size" + (f" (now {fmt.count(size)})" if size else "")
                + " within what the database accepts, put a connection pooler (PgBouncer, RDS Proxy) in front, "
                "and shorten how long requests hold a connection"
                + (f" (start with {', '.join(slow[:2])})" if slow else "") + ".")
        elif kind == "resource_saturated" and "cpu" in subject.lower():
            actions.append(f"CPU ({subject}): add instances behind the load balancer (horizontal scaling) or a larger "
                           "instance size, and profile the hottest endpoints.")
        elif kind == "resource_saturated":
            actions.append(f"{subject}: raise its limit or spread the load before it saturates.")
        elif kind == "memory_growth":
            actions.append(f"Memory ({subject}) keeps growing under steady load: find the leak before scaling out.")
        elif kind == "latency_growth":
            actions.append(f"Optimise {subject}: its p95 grows fastest with the users (queries, indexes, caching).")
        elif kind == "errors_under_load":
            actions.append(f"Errors under load ({subject}): find which limit produces them.")
        elif kind == "slow_endpoint" and not any(subject in a for a in actions):
            actions.append(f"{subject} is much slower than the other endpoints: look at what it does per request.")
    return list(dict.fromkeys(actions))[:6]


# -- load generators for the goal -----------------------------------------------------------------
def workers_for(users: int, generator: GeneratorHealth, *, measured_users: int) -> tuple[int, str]:
    """(worker processes for ``users``, where the figure comes from).

    From the run's own peak demand per process, scaled by ``users / measured_users``
    and planned under the health check's head-room (the same rule as
    :func:`stampede.figures.stages.recommended_workers`), when the run had at least
    ``MIN_SIGNAL_USERS_PER_PROCESS`` users a process on a generator that did not
    saturate (a saturated one's demand is capped by its core); else from the
    benchmarked ``sizing.USERS_PER_WORKER``.
    """
    processes = generator.workers
    demand = generator.demand_max_pct or generator.cpu_max_pct
    per_process = measured_users / processes if processes else 0
    if generator.saturated:
        why_not = "this run's generator saturated: its CPU per user is only a floor"
    elif per_process < MIN_SIGNAL_USERS_PER_PROCESS or demand <= 0:
        why_not = "this run had too few users a process to measure its own CPU per user"
    else:
        needed = recommended_workers(processes, demand * users / measured_users, generator.limit_pct, saturated=False)
        source = (f"this run: a generator wanted {fmt.num(demand, 0)} % of a core for {fmt.count(per_process)} "
                  f"users, planned at {fmt.num(HEADROOM * generator.limit_pct, 0)} % of a core each")
        return needed or sizing.worker_count(users), source
    return sizing.worker_count(users), (f"the project's bench: {fmt.count(sizing.USERS_PER_WORKER)} users a worker "
                                        f"process ({why_not})")


def _generators(result: RunResult) -> GeneratorPlan:
    generator, peak = result.generator, result.peak_users
    if not peak:
        return GeneratorPlan(text="No stage of this run sent requests: no generator figures to plan from.")
    workers, source = workers_for(GOAL_USERS, generator, measured_users=peak)
    run_cost = result.cost
    cloud = run_cost is not None and run_cost.provider != "local"
    # an instance type holds what it holds; a Fargate size is derived again for the goal's users a worker
    plan = sizing.plan_workers(GOAL_USERS, provider=run_cost.provider if cloud else DEFAULT_PROVIDER, count=workers,
                               spot=run_cost.spot if cloud else False,
                               size=run_cost.size if cloud and run_cost.provider == "ec2" else None)
    load_s = sum(s.duration_s for s in result.stages)
    try:
        region = (run_cost.region if cloud else "") or cost.region()
        goal_cost = cost.estimate(plan, load_duration_s=load_s, peak_users=GOAL_USERS, region=region,
                                  prices=cost.load_prices())
    except (OSError, ValueError, KeyError):  # no prices for the region: the plan without a price
        goal_cost = None
    spot = " spot" if plan.spot else ""
    text = (f"For {fmt.count(GOAL_USERS)} users: {_plural(plan.count, 'worker process', 'es')}"
            f" of {fmt.count(plan.users_per_worker)} users each ({plan.provider} {plan.size}{spot})")
    if goal_cost is not None:
        text += (f", about {fmt.usd(goal_cost.estimate_usd)} for a run as long as this one "
                 f"({fmt.usd(goal_cost.worker_hour_usd)} an hour a worker, prices of {goal_cost.prices_as_of})")
    text += f"; from {source}."
    if generator.recommended_workers is not None and peak != GOAL_USERS:
        text += (f" The health check's figure ({_plural(generator.recommended_workers, 'worker')}) is for this "
                 f"run's own load ({fmt.count(peak)} users), not for {fmt.count(GOAL_USERS)}.")
    if run_cost is not None and run_cost.estimate_usd is not None:
        text += f" This run's own estimate was {fmt.usd(run_cost.estimate_usd)}."
    return GeneratorPlan(
        text=text, workers=plan.count, machines=plan.count, size=plan.size,
        cost_usd=goal_cost.estimate_usd if goal_cost else None,
        hourly_usd=goal_cost.worker_hour_usd if goal_cost else None, per_worker_users=plan.users_per_worker,
    )


def _plural(n: int, word: str, suffix: str = "s") -> str:
    return f"{fmt.count(n)} {word}{'' if n == 1 else suffix}"
