"""Stop requests with a kind, and the environment's allowed hours enforced while load runs.

Preflight refuses a run outside its environment's ``allowed_hours``; a run that
started inside the window must also stop when the window closes (a nightly
endurance run that would overrun into business hours). The supervisor polls its
stop probe twice a second; ``with_allowed_hours`` adds the window to it.

A probe returns a reason (``str``) or ``None``. A plain ``str`` is the kill
switch; a ``StopRequest`` carries its own kind, which becomes ``stopped.kind``
in the results.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from stampede.plan.environments import Environment
from stampede.plan.run_plan import RunPlan

StopProbe = Callable[[], "str | None"]


class StopRequest(str):
    """A reason to stop the load; ``kind`` goes to the results."""

    kind = "kill_switch"


class WindowClosed(StopRequest):
    kind = "allowed_hours"


# stops that say nothing about the target: the run is invalid, not failed
INVALIDATING_KINDS = frozenset({StopRequest.kind, WindowClosed.kind})


def kind_of(reason: str) -> str:
    return getattr(reason, "kind", StopRequest.kind)


def stop_request(stopped: dict) -> StopRequest | None:
    """The results' ``stopped`` back as a request, when its kind invalidates the run (else ``None``)."""
    kind = stopped.get("kind") if stopped else None
    if kind not in INVALIDATING_KINDS:
        return None
    request = WindowClosed if kind == WindowClosed.kind else StopRequest
    return request(stopped.get("reason") or kind.replace("_", " "))


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def with_allowed_hours(plan: RunPlan, probe: StopProbe) -> StopProbe:
    """``probe``, then: has the plan's environment's window closed?"""
    if not plan.allowed_hours:
        return probe
    env = Environment(name=plan.environment, allowed_hours=plan.allowed_hours)

    def probe_with_window() -> str | None:
        reason = probe()
        if reason:
            return reason
        now = utcnow()
        if env.is_allowed_at(now):
            return None
        return WindowClosed(f"allowed hours: {now:%H:%M} UTC is past {env.name}'s window ({env.hours_text()} UTC)")

    return probe_with_window
