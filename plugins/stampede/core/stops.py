"""Why the load stopped before its planned end: one kind for each reason, and what each means.

``StopKind`` is the only place the kinds are spelled. A stop that says nothing
about the target (the kill switch, the end of the allowed hours, load that tried
to go where preflight did not approve) makes a run *invalid*: its figures end
early for a reason of our own, or were not all sent where they should have been. A stop that is a
finding about the target (an abort threshold held, the target went down) makes
it *fail*.

A stop probe (polled by the load's supervisor twice a second) returns a
:class:`StopRequest` or ``None``; the master records the stop as
``results.json`` → ``stopped {reason, kind, at}``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class StopKind(StrEnum):
    KILL_SWITCH = "kill_switch"  # an operator flipped the kill switch
    ALLOWED_HOURS = "allowed_hours"  # the environment's window closed during the run
    ABORT = "abort"  # a threshold marked abort held over its window
    TARGET_UNHEALTHY = "target_unhealthy"  # the target failed its health check between stages
    EGRESS_DENIED = "egress_denied"  # a load process tried to reach an address preflight did not approve
    OWNER_LOST = "owner_lost"  # the load's owner died and nobody took the run over within its grace
    STOPPED = "stopped"  # the owner was stopped on purpose (SIGTERM, Airflow's "Mark as failed", a timeout)
    MASTER_DIED = "master_died"  # the Locust master died mid-run: the figures end at its last checkpoint

    @property
    def invalidates(self) -> bool:
        """The stop says nothing about the target: the run's figures are not a verdict on it."""
        return self in INVALIDATING

    @property
    def fails(self) -> bool:
        """The stop is a finding about the target."""
        return self in FAILING


INVALIDATING = frozenset({StopKind.KILL_SWITCH, StopKind.ALLOWED_HOURS, StopKind.EGRESS_DENIED, StopKind.OWNER_LOST,
                          StopKind.MASTER_DIED,
                          StopKind.STOPPED})
FAILING = frozenset({StopKind.ABORT, StopKind.TARGET_UNHEALTHY})


def stop_kind(value: str | None) -> StopKind:
    """The kind named ``value``; an unknown or missing kind counts as the kill switch (it invalidates)."""
    try:
        return StopKind(value)
    except ValueError:
        return StopKind.KILL_SWITCH


@dataclass(frozen=True)
class StopRequest:
    """A reason to stop the load now, and its kind."""

    reason: str
    kind: StopKind = StopKind.KILL_SWITCH

    def __str__(self) -> str:
        return self.reason

    def to_dict(self) -> dict[str, str]:
        return {"reason": self.reason, "kind": str(self.kind)}


StopProbe = Callable[[], "StopRequest | None"]


def never() -> StopRequest | None:
    """The probe of a run nothing stops early."""
    return None
