"""The words for how a run ended, the same in the HTML report and in Slack.

:func:`describe` says what a stop of each kind means; :func:`cleanup_problem`
says what test data a run left on the target, or that nobody knows: a run that
left data (or cannot prove it left none) never reads as a clean pass. Plain
text: escaping for a medium is the renderer's business.
"""

from __future__ import annotations

from stampede.core import fmt
from stampede.core.records import CleanupResult
from stampede.core.stops import StopKind

__all__ = ["cleanup_problem", "describe"]

_STOP_DESCRIPTIONS: dict[StopKind, str] = {
    StopKind.KILL_SWITCH: "the kill switch was set: the figures end early for a reason of our own",
    StopKind.ALLOWED_HOURS: "the environment's allowed hours ended: the figures end early for a reason of our own",
    StopKind.ABORT: "a threshold marked abort held over its window",
    StopKind.TARGET_UNHEALTHY: "the target failed its health check between stages: it went down under load",
    StopKind.EGRESS_DENIED: ("a load process tried to reach an address preflight did not approve (refused before "
                             "it connected): the figures end early for a reason of our own"),
    StopKind.OWNER_LOST: ("the process that owned the load died and nobody took the run over within its grace: "
                          "the load stopped itself and the figures end early for a reason of our own"),
    StopKind.STOPPED: ("the run was stopped on purpose (a signal, Airflow's \"Mark as failed\" or a time limit): "
                       "the figures end early for a reason of our own"),
    StopKind.MASTER_DIED: ("the Locust master died mid-run: the figures are built from its stream up to its last "
                           "checkpoint and end early for a reason of our own"),
}


def describe(kind: StopKind) -> str:
    """What a stop of this kind means, in a few words for people."""
    return _STOP_DESCRIPTIONS[kind]


def cleanup_problem(cleanup: CleanupResult) -> str | None:
    """``CLEANUP INCOMPLETE: 12 test entities left``, or None when cleanup proved nothing is left.

    A count of ``None`` (cleanup never counted) or below zero (it failed before
    counting) means what is left is not known.
    """
    if cleanup.clean:
        return None
    if cleanup.left is None or cleanup.left < 0:
        what = "unknown how many test entities are left"
    elif cleanup.left > 0:
        what = f"{fmt.count(cleanup.left)} test entities left"
    else:
        what = "cleanup reported errors, though it counted none left"
    return f"CLEANUP INCOMPLETE: {what}"
