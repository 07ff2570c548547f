"""One threshold rule, used alike by the mid-run abort, the validation and the breaking-point search.

A scenario's ``thresholds: {p95_ms: 200, error_rate: 0.01, min_rps: 100}`` is a
table of :class:`Threshold`: ``<figure> <op> <limit>`` must hold, strictly, as
the seed words them ("p95 < 200 ms", "errors < 1 %", "> 100 req/s"): a value
equal to its limit breaks the threshold. Like k6's ``Threshold`` type, one rule
decides both whether the load stops early (:meth:`Threshold.breached` on the
master's window) and the stage's verdict after the run (Great Expectations
evaluates the same table: ``stampede.analysis.expectations``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

# scenario key -> (the figure it judges, the operator that figure must satisfy against the limit)
RULES: dict[str, tuple[str, str]] = {
    "p95_ms": ("p95_ms", "<"),
    "p99_ms": ("p99_ms", "<"),
    "error_rate": ("error_rate", "<"),
    "min_rps": ("rps", ">"),
}
KEYS = tuple(RULES)


class Figures(Protocol):
    """What a threshold can be judged on: a stage, a phase, a breaking-point step, a window."""

    requests: int
    rps: float
    p95_ms: float | None
    p99_ms: float | None
    error_rate: float


@dataclass(frozen=True)
class Threshold:
    """``figure op limit`` must hold (strict). ``metric`` is the scenario's key (``min_rps``)."""

    metric: str
    limit: float

    def __post_init__(self) -> None:
        if self.metric not in RULES:
            raise ValueError(f"thresholds.{self.metric}: unknown threshold; fix: use one of {', '.join(KEYS)}")

    @property
    def figure(self) -> str:
        """The figure judged (``rps`` for ``min_rps``)."""
        return RULES[self.metric][0]

    @property
    def op(self) -> str:
        return RULES[self.metric][1]

    @property
    def judged_mid_run(self) -> bool:
        """Whether the mid-run abort may judge it. A low request rate harms no one and follows
        from users × think time, and the freshest seconds are still incomplete, so ``min_rps``
        is judged over the whole stage only."""
        return self.metric != "min_rps"

    def holds(self, value: float | None) -> bool:
        """``value op limit``; a missing value does not hold (nothing was measured)."""
        if value is None:
            return False
        return value < self.limit if self.op == "<" else value > self.limit

    def breached(self, value: float | None) -> bool:
        """A measured value that does not hold (a missing value is not a breach: see :meth:`holds`)."""
        return value is not None and not self.holds(value)

    def value_of(self, figures: Figures) -> float | None:
        return getattr(figures, self.figure)


def table(thresholds: Mapping[str, float]) -> list[Threshold]:
    """A scenario's (or a planned stage's) ``{key: limit}`` as thresholds, in the rules' order."""
    return [Threshold(key, float(thresholds[key])) for key in KEYS if thresholds.get(key) is not None]


def breaches(thresholds: Mapping[str, float], figures: Figures) -> list[tuple[Threshold, float]]:
    """Every threshold ``figures`` break, with the value that broke it."""
    found = []
    for threshold in table(thresholds):
        value = threshold.value_of(figures)
        if threshold.breached(value):
            found.append((threshold, float(value)))  # type: ignore[arg-type]
    return found
