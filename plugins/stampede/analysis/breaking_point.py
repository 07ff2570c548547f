"""The breaking-point search, as pure decisions: which level next, was it good, where is the point.

    levels = start, start·f, start·f², … ≤ max      (or start + k·step)
    step up:   run each level as one short stage, judged on its steady part:
        bad   when a threshold breaks (the one rule of ``stampede.core.thresholds``),
              or at a knee: throughput grew less than ``knee_efficiency`` × the load's
              relative growth since the last good step (the target stopped scaling),
              or (open model) more than 1 % of the iterations found no free user
              — stop at the first bad level;
    refine:    bisect ``refine_steps`` times between the last good and the first bad level;
    summarise: the breaking point is the highest good level: the most load the target
              held, with the ``reason`` the next level failed; a USL capacity model is
              fitted to the valid closed-model steps.

:class:`BreakingPointSearch` holds the search's state and calls back ``run_level``
for each level (``stampede.steps.breaking_point`` runs it as a level of the
same load step as a staged run). Nothing here sends load: the search's whole
logic is tested with levels that are made up.

Safety: levels never exceed the environment's user cap (the maximum is
clamped), a stop request ends the search, and a step on a saturated generator
stops it: beyond it, the figures measure the generator.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from stampede.analysis.capacity import capacity_from_points
from stampede.core import thresholds as threshold_rules
from stampede.core.records import BreakingPoint, CapacityModel, StepFigures
from stampede.core.stops import StopRequest
from stampede.core.verdict import Verdict, verdict_of
from stampede.plan.scenario import Search

log = logging.getLogger(__name__)

__all__ = [
    "BreakingPointSearch", "SearchOutcome", "bisect_level", "breaking_point_of", "judge_step", "plan_levels",
]

DROPPED_LIMIT = 0.01  # open model: more dropped iterations than this fraction means the target could not keep up
SEARCH_THRESHOLDS = ("p95_ms", "p99_ms", "error_rate")  # min_rps belongs to a fixed load, not to a search


# -- pure parts -------------------------------------------------------------------
def plan_levels(search_spec: Search, *, cap: float | None = None, whole: bool = True) -> list[float]:
    """The step-up levels from start to the maximum (clamped to ``cap``), the maximum always included."""
    top = min(search_spec.maximum, cap) if cap else search_spec.maximum
    levels: list[float] = []
    level = search_spec.start
    while level < top - 1e-9 and len(levels) < 100:
        value = float(round(level)) if whole else round(level, 3)
        if not levels or value > levels[-1]:
            levels.append(value)
        level = level * search_spec.step_factor if search_spec.step_factor else level + (search_spec.step_increment or 1)
    if not levels or top > levels[-1]:
        levels.append(float(math.floor(top)) if whole else top)
    return levels


def judge_step(
    step: StepFigures, last_good: StepFigures | None, thresholds: Mapping[str, float], knee_efficiency: float
) -> tuple[bool, list[str]]:
    """Good or bad, and why (the thresholds' one rule, strict; the knee against the last good step)."""
    reasons = []
    if step.requests == 0:
        reasons.append(f"no requests at {load_text(step)}")
    judged = {k: v for k, v in thresholds.items() if k in SEARCH_THRESHOLDS}
    for threshold, value in threshold_rules.breaches(judged, step):
        if threshold.metric == "error_rate":
            shown = f"{value:.2%} >= {threshold.limit:.2%}"
        else:
            shown = f"{value:.0f} ms >= {threshold.limit:.0f} ms"
        reasons.append(f"threshold {threshold.metric} broke at {load_text(step)}: {shown}")
    if step.iterations and step.dropped_iterations is not None and step.dropped_iterations > DROPPED_LIMIT * step.iterations:
        reasons.append(
            f"{step.dropped_iterations} of {step.iterations} iterations dropped at {load_text(step)}: "
            "every pre-allocated user was busy (the target slowed down)"
        )
    if last_good is not None and last_good.rps > 0 and step.level > last_good.level:
        load_growth = step.level / last_good.level - 1
        rps_growth = step.rps / last_good.rps - 1
        if rps_growth < knee_efficiency * load_growth:
            reasons.append(
                f"knee at {load_text(step)}: throughput grew {rps_growth:+.0%} ({last_good.rps:.1f} → {step.rps:.1f} req/s) "
                f"while the load grew {load_growth:+.0%}"
            )
    return not reasons, reasons


def bisect_level(good: float, bad: float, *, whole: bool = True) -> float | None:
    """The level halfway between the last good and the first bad one, or None when they are adjacent."""
    middle = (good + bad) / 2
    if whole:
        middle = float(math.floor(middle))
        return middle if good < middle < bad else None
    return round(middle, 3) if bad - good > max(0.02 * good, 0.5) else None


def breaking_point_of(steps: list[StepFigures], *, cap_reached: bool, stopped: str | None) -> BreakingPoint:
    """The highest good level and why the next one failed, from the judged steps."""
    valid = [s for s in steps if s.valid and s.good is not None]
    good = [s for s in valid if s.good]
    bad = [s for s in valid if not s.good]
    best = max(good, key=lambda s: s.level) if good else None
    first_bad = min((s for s in bad if best is None or s.level > best.level), key=lambda s: s.level, default=None)
    if stopped:
        reason = stopped
    elif first_bad is not None:
        reason = "; ".join(first_bad.reasons)
    elif cap_reached:
        reason = "no break up to the search's maximum (or the environment's user cap): the breaking point lies above"
    else:
        reason = "no step was judged"
    return BreakingPoint(
        reason=reason,
        found=best is not None and first_bad is not None and not stopped,
        users=best.users if best else None,
        rps=best.rps if best else None,
        p95_ms=best.p95_ms if best else None,
        error_rate=best.error_rate if best else None,
        level=best.level if best else None,
        first_bad_level=first_bad.level if first_bad else None,
        first_bad_users=first_bad.users if first_bad else None,
        max_rps=max((s.rps for s in valid), default=None),
        rate=best.target_rate if best is not None else None,
    )


def load_text(step: StepFigures) -> str:
    return level_text(step.level, open_model=step.target_rate is not None)


def level_text(level: float, *, open_model: bool) -> str:
    return f"{level:g} it/s" if open_model else f"{int(level)} users"


# -- the search's state ------------------------------------------------------------------
@dataclass
class SearchOutcome:
    """What the search found: the point, the verdict, the steps and the capacity model."""

    breaking_point: BreakingPoint
    verdict: Verdict
    steps: list[StepFigures]
    capacity: CapacityModel | None
    stop: StopRequest | None


RunLevel = Callable[[float, str, int], "tuple[StepFigures, StopRequest | None] | None"]


@dataclass
class BreakingPointSearch:
    """Step up, refine, summarise, calling ``run_level(level, phase, index)`` for each level.

    ``run_level`` returns the level's figures and the stop request that ended it early
    (if any), or ``None`` when a stop request came before the level started. Only a stop
    that invalidates (the kill switch, the allowed hours) is returned: an abort threshold
    inside a level just makes that level bad.

    :param thresholds: the scenario's ``{key: limit}``; only the latency and error thresholds judge a step.
    :param advice: the generator's advice for a saturated step (why the search stopped there).
    """

    spec: Search
    thresholds: Mapping[str, float]
    run_level: RunLevel
    open_model: bool = False
    user_cap: int | None = None
    steps: list[StepFigures] = field(default_factory=list)
    last_good: StepFigures | None = None
    first_bad: StepFigures | None = None
    stop: StopRequest | None = None
    advice: Callable[[], str] = lambda: "add workers"

    def levels(self) -> list[float]:
        """The step-up levels, the maximum clamped to the environment's user cap."""
        cap = None
        if self.user_cap and not self.open_model and self.spec.maximum > self.user_cap:
            log.warning("search: max_users %d clamped to the environment's cap of %d", int(self.spec.maximum),
                        self.user_cap)
            cap = float(self.user_cap)
        return plan_levels(self.spec, cap=cap, whole=not self.open_model)

    @property
    def saturated(self) -> bool:
        return any(not s.valid for s in self.steps)

    def _run(self, level: float, phase: str) -> StepFigures | None:
        ran = self.run_level(level, phase, len(self.steps) + 1)
        if ran is None:
            return None
        step, stop = ran
        self.steps.append(step)
        self.stop = stop or self.stop
        return step

    def _judge(self, step: StepFigures) -> None:
        step.good, step.reasons = judge_step(step, self.last_good, self.thresholds, self.spec.knee_efficiency)
        if step.good:
            self.last_good = step
        else:
            self.first_bad = step

    def step_up(self) -> None:
        """Run the levels from the start until one is bad, the generator saturates or a stop comes."""
        for level in self.levels():
            step = self._run(level, "step")
            if step is None or self.stop is not None or not step.valid:
                return
            self._judge(step)
            if step is self.first_bad:
                return

    def refine(self) -> None:
        """Bisect between the last good and the first bad level, ``refine_steps`` times at most."""
        for _ in range(self.spec.refine_steps):
            if self.last_good is None or self.first_bad is None or self.stop is not None or self.saturated:
                return
            middle = bisect_level(self.last_good.level, self.first_bad.level, whole=not self.open_model)
            if middle is None:
                return
            step = self._run(middle, "refine")
            if step is None or self.stop is not None or not step.valid:
                return
            self._judge(step)

    def summarise(self) -> SearchOutcome:
        cap_reached = self.first_bad is None and bool(self.steps) and self.steps[-1].good is True
        stopped_reason = None
        if self.stop is not None:
            stopped_reason = f"stopped: {self.stop.reason}"
        elif self.saturated:
            bad_step = next(s for s in self.steps if not s.valid)
            stopped_reason = (
                f"the load generator, not the target, was the limit at {load_text(bad_step)}: "
                f"{self.advice()}; the breaking point lies above the last good step"
            )
        point = breaking_point_of(self.steps, cap_reached=cap_reached, stopped=stopped_reason)
        point = replace(point, user_cap=self.user_cap,
                        max_level_searched=max((s.level for s in self.steps), default=None))
        judged = [self.last_good is not None] if self.steps else []
        verdict = verdict_of(judged=judged, stop=self.stop.kind if self.stop else None, saturated=self.saturated)
        if verdict == "fail":
            point.reason = f"already broken at the first step ({point.reason}); lower search.start"
        return SearchOutcome(breaking_point=point, verdict=verdict, steps=self.steps,
                             capacity=self._capacity(), stop=self.stop)

    def _capacity(self) -> CapacityModel | None:
        if self.open_model:
            return None
        points = [(float(s.users), s.rps) for s in self.steps if s.valid and s.rps > 0]
        if len({n for n, _ in points}) < 3:
            return None
        try:
            return capacity_from_points(points)
        except ValueError:
            return None

    def run(self) -> SearchOutcome:
        self.step_up()
        self.refine()
        return self.summarise()
