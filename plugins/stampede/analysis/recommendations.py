"""Scaling recommendations: what the target holds now, what limits it, what to change for 10,000 users.

Built from the run's stages, its ranked bottlenecks, and, when other steps
have added them to results.json, ``breaking_point``, ``capacity`` (the
capacity model), ``generator.recommended_workers`` and ``cost``. Every number
says where it comes from; an extrapolation says it is one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["GOAL_USERS", "recommend"]

GOAL_USERS = 10_000  # the seed's success metric
WORKER_TARGET_CPU_PCT = 60.0  # plan generators to sit at 60 % of a core, well under the 85 % saturation line
WORKER_SIZE = os.environ.get("STAMPEDE_WORKER_SIZE", "c6i.large (2 vCPU, 4 GiB)")
WORKER_PROCESSES_PER_MACHINE = 2  # one Locust process per vCPU
DEFAULT_HOURLY_USD = 0.085  # c6i.large on demand, us-east-1; override STAMPEDE_WORKER_HOURLY_USD


def _first(mapping: Mapping[str, Any] | None, *keys: str) -> Any:
    for key in keys:
        if mapping and mapping.get(key) is not None:
            return mapping[key]
    return None


def recommend(results: Mapping[str, Any], bottlenecks: Sequence[Mapping[str, Any]],
              server: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """results.json ``recommendations``: ``holds_now``, ``limited_by``, ``actions[]``, ``goal``, ``generators``."""
    stages = [s for s in results.get("stages") or [] if s.get("requests")]
    passing = [s for s in stages if s.get("passed")]
    breaking = results.get("breaking_point") or {}
    capacity = results.get("capacity") or {}

    holds = _first(breaking, "max_good_users", "last_passing_users", "holds_users", "users")
    if holds is not None:
        holds_text = f"The target holds {int(holds):,} users within the thresholds (breaking-point search)."
    elif passing:
        best = max(passing, key=lambda s: s["users"])
        holds = best["users"]
        holds_text = (f"The target held {holds:,} users within the thresholds in stage {best['name']} "
                      f"({best['rps']:.1f} req/s, p95 {best['p95_ms']:.0f} ms); this run did not look beyond that.")
    else:
        holds_text = "No stage of this run met its thresholds: the target does not hold the lowest load tried."
    broke = _first(breaking, "broke_at_users", "breaking_users")
    if broke is not None:
        holds_text += f" It breaks at about {int(broke):,} users."
    peak = _first(capacity, "peak_users", "max_users")
    if peak is not None:
        peak_rps = _first(capacity, "peak_rps", "max_rps")
        holds_text += (f" The capacity model ({capacity.get('model', 'fit')}) puts the throughput peak at "
                       f"{int(peak):,} users" + (f" ({float(peak_rps):,.0f} req/s)." if peak_rps else "."))

    top = next((b for b in bottlenecks if b.get("kind") != "slow_endpoint"), bottlenecks[0] if bottlenecks else None)
    limited_by = (f"{top['title']}: {top['evidence'][0]}" if top and top.get("evidence") else
                  "No bottleneck showed at this load: push further (breaking-point DAG) to find one.")
    actions = _actions(bottlenecks, server or {})

    goal: dict[str, Any] = {"users": GOAL_USERS}
    if holds:
        ratio = GOAL_USERS / holds
        best = max(passing or stages, key=lambda s: s["users"]) if stages else None
        rps_per_user = best["rps"] / best["users"] if best and best["users"] else None
        goal["factor"] = round(ratio, 1)
        if ratio <= 1:
            goal["text"] = f"{GOAL_USERS:,} users are within what the target holds now."
        else:
            goal["text"] = (
                f"{GOAL_USERS:,} users is ×{ratio:.1f} the load held now"
                + (f" (about {rps_per_user * GOAL_USERS:,.0f} req/s at this run's think times)" if rps_per_user else "")
                + f": if the target scaled linearly it would need about {math.ceil(ratio)}× its current capacity "
                "once the limit above is removed (an extrapolation: verify with the breaking-point DAG)."
            )
    else:
        goal["text"] = f"Fix the failing stages before planning for {GOAL_USERS:,} users."
    return {
        "holds_now": holds_text, "limited_by": limited_by, "actions": actions, "goal": goal,
        "generators": _generators(results),
    }


def _pool_size(server: Mapping[str, Any]) -> float | None:
    for entry in (server.get("series") or {}).values():
        if entry.get("role") == "pool_size" and entry.get("max") is not None:
            return entry["max"]
    return None


def _actions(bottlenecks: Sequence[Mapping[str, Any]], server: Mapping[str, Any]) -> list[str]:
    actions: list[str] = []
    slow = [b["subject"] for b in bottlenecks if b.get("kind") in ("latency_growth", "slow_endpoint")]
    for b in bottlenecks:
        kind, subject = b.get("kind"), b.get("subject", "")
        if kind == "generator_saturated":
            actions.append("Add load-generator workers and run again: this run measured the generator, not the target.")
        elif kind == "resource_saturated" and subject == "database pool":
            size = _pool_size(server)
            actions.append(
                "Database pool: raise the pool size" + (f" (now {size:.0f})" if size else "")
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
    seen, unique = set(), []
    for action in actions:
        if action not in seen:
            seen.add(action)
            unique.append(action)
    return unique[:6]


def _generators(results: Mapping[str, Any]) -> dict[str, Any]:
    generator = results.get("generator") or {}
    stages = [s for s in results.get("stages") or [] if s.get("requests")]
    peak_users = max((s["users"] for s in stages), default=0)
    processes = max(int(generator.get("processes") or 1), 1)
    recommended = generator.get("recommended_workers")
    if recommended is not None:
        source = "generator health check"
        workers = int(recommended)
    elif peak_users and generator.get("cpu_max_pct"):
        cpu_per_user = float(generator["cpu_max_pct"]) / max(peak_users / processes, 1)
        workers = max(1, math.ceil(cpu_per_user * GOAL_USERS / WORKER_TARGET_CPU_PCT))
        source = (f"{generator['cpu_max_pct']:.0f} % of a core for {peak_users / processes:,.0f} users per process "
                  f"in this run, planned at {WORKER_TARGET_CPU_PCT:.0f} % a process")
    else:
        return {"text": "No generator figures in this run to plan from."}
    machines = math.ceil(workers / WORKER_PROCESSES_PER_MACHINE)
    hourly = float(os.environ.get("STAMPEDE_WORKER_HOURLY_USD", DEFAULT_HOURLY_USD))
    load_hours = sum(float(s.get("duration_s") or 0) for s in results.get("stages") or []) / 3600
    estimate = (results.get("cost") or {}).get("estimate_usd")
    cost = machines * hourly * max(load_hours, 0.25)  # billed time: at least a quarter of an hour per run
    text = (f"For {GOAL_USERS:,} users: {workers} worker process{'es' if workers != 1 else ''} "
            f"on {machines} × {WORKER_SIZE}, about ${cost:,.2f} for a run as long as this one "
            f"(${hourly:.3f}/h each; from {source}).")
    if estimate is not None:
        text += f" This run's own estimate was ${float(estimate):,.2f}."
    return {"workers": workers, "machines": machines, "size": WORKER_SIZE, "cost_usd": round(cost, 2),
            "hourly_usd": hourly, "text": text}
