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
