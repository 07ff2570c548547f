"""The environment's allowed hours, enforced while the load runs.

Preflight refuses a run outside its environment's ``allowed_hours``; a run that
started inside the window must also stop when the window closes (a nightly
endurance run that would overrun into business hours). The supervisor polls its
stop probe twice a second; :func:`with_allowed_hours` adds the window to it.
"""

from __future__ import annotations

from datetime import datetime, timezone

from stampede.core.stops import StopKind, StopProbe, StopRequest
from stampede.plan.environments import Environment
from stampede.plan.run_plan import RunPlan


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def with_allowed_hours(plan: RunPlan, probe: StopProbe) -> StopProbe:
    """``probe``, then: has the plan's environment's window closed?"""
    if not plan.allowed_hours:
        return probe
    env = Environment(name=plan.environment, allowed_hours=plan.allowed_hours)

    def probe_with_window() -> StopRequest | None:
        request = probe()
        if request is not None:
            return request
        now = utcnow()
        if env.is_allowed_at(now):
            return None
        return StopRequest(
            f"allowed hours: {now:%H:%M} UTC is past {env.name}'s window ({env.hours_text()} UTC)",
            StopKind.ALLOWED_HOURS,
        )

    return probe_with_window
