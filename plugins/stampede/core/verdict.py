"""The run's verdict, decided in one place for staged runs and the breaking-point search alike.

- ``invalid``: the figures say nothing trustworthy about the target: the load
  generator saturated, the load stopped for a reason of our own (the kill switch,
  the allowed hours), or nothing was judged at all;
- ``fail``: something was judged and did not hold: a stage breached a threshold,
  an abort threshold stopped the load, the target went down under load;
- ``pass``: every judged part held.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum
from typing import Literal

from stampede.core.stops import StopKind

Verdict = Literal["pass", "fail", "invalid"]
VERDICTS: tuple[Verdict, ...] = ("pass", "fail", "invalid")


def verdict_of(*, judged: Sequence[bool], stop: StopKind | None, saturated: bool) -> Verdict:
    """:param judged: one entry per judged part (stage or step): whether it held."""
    if saturated or (stop is not None and stop.invalidates) or not judged:
        return "invalid"
    if (stop is not None and stop.fails) or not all(judged):
        return "fail"
    return "pass"


class Exit(IntEnum):
    """The command line's exit codes: the one list (docs/ci.md#exit-codes shows it, a test keeps them equal)."""

    PASS = 0  # every judged part held, the test data is proved gone, no worker is left
    FAIL = 1  # a threshold was breached, an abort threshold stopped the load, or the target went down
    REFUSED = 2  # refused or bad input before any load was sent (one line on stderr)
    INVALID = 3  # the figures cannot be trusted: the generator saturated, or the kill switch / allowed hours stopped it
    LEFT_BEHIND = 4  # test data may be left on the target (left above 0 or unknown), or a worker survived teardown
    ERROR = 5  # Stampede itself failed (a bug or a broken dependency); the traceback is on stderr


VERDICT_EXITS = {"pass": Exit.PASS, "fail": Exit.FAIL, "invalid": Exit.INVALID}
