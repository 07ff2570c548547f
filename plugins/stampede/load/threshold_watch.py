"""The Locust master's live judge: thresholds during the run, and every rolling window for after it.

The aggregator hands the watch each second's per-endpoint histograms as it merges them
(:meth:`ThresholdWatch.add`) and calls :meth:`ThresholdWatch.check` once a second. The watch

1. judges the running stage's thresholds on the last window of *complete* seconds (every worker
   has reported them: they report every 3 s), once ``Threshold.judged_from_s`` seconds of the
   stage's steady part have passed, so the window never reaches into the ramp. A value that
   breaks its threshold is a breach (``results.json`` → ``breaches``, once per stage, threshold
   and subject); when the threshold aborts, the load stops (``stopped.kind`` ``abort``).
   Server-side thresholds are judged on the samples the supervisor's sampler writes to
   ``server_metrics.live.json`` beside the master's output as it scrapes;
2. slides every windowed threshold's rolling windows over the seconds as they become final,
   for each stage part (its steady part, and the whole stage for a stage that has none) and
   subject, keeping the worst window. :meth:`finish` returns them for ``locust_output.json``
   (``windows``), where validation reads them: the worst window *is* the value judged, so a
   threshold "p95 below 800 ms over 30 s windows" fails exactly when some 30 s of the steady
   part had a p95 at or above 800 ms.

Both judge with :class:`stampede.core.thresholds.Threshold`, the rule validation uses after the
run, on the same exactly merged histograms. Memory is bounded: seconds are kept only as long as
the longest window needs them.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Iterator, Mapping
from typing import Any

from stampede.core.histogram import LatencyHistogram
from stampede.core.stops import StopKind
from stampede.core.thresholds import (
    COMPLETE_AFTER_S, Measured, RollingWindow, Samples, Threshold, Worst, table,
)
from stampede.figures.live import LIVE_FILE_NAME, read_live_points

logger = logging.getLogger("stampede")

PARTS = ("whole", "steady")


def planned_rules(stage: Mapping[str, Any]) -> list[Threshold]:
    """A planned stage's thresholds; a plan without a table (older callers) gives its legacy mapping."""
    rules = stage.get("threshold_table")
    if rules is not None:
        return [Threshold.from_dict(rule) for rule in rules]
    return [rule.with_defaults(abort=bool(stage.get("abort")), delay_s=stage.get("abort_delay_s"),
                               abort_window_s=stage.get("abort_window_s"))
            for rule in table(stage.get("thresholds") or {})]


class ThresholdWatch:
    """Thresholds judged on the master while the load runs (see the module docstring)."""

    def __init__(self, aggregator, *, final_after_s: int) -> None:
        self.agg = aggregator
        self.final_after_s = final_after_s
        self.tables = [planned_rules(stage) for stage in aggregator.stages]
        rules = [rule for rules in self.tables for rule in rules]
        live = [r for r in rules if (r.judged_mid_run or r.window_s) and r.server is None]
        self.selectors = [r.endpoints for r in live if r.endpoints is not None]
        self.open_model = aggregator.plan.get("model") == "open"
        self.keep_s = max((r.mid_run_window_s for r in rules), default=0) + final_after_s + COMPLETE_AFTER_S + 5
        self.seconds: dict[int, dict[str | None, Measured]] = {}  # second -> endpoint (None: every endpoint)
        self.wanted: dict[str, bool] = {}
        self.slid_upto: int | None = None
        self.windows: dict[tuple[int, int, str, str | None], RollingWindow] = {}
        self.worst: dict[tuple[int, int, str, str | None], Worst] = {}
        self.part_start: dict[tuple[int, str], int] = {}
        self.part_seconds: dict[tuple[int, str], int] = defaultdict(int)
        self.breached: set[tuple[str, int, str | None]] = set()

    # -- data in -------------------------------------------------------------------------------------------------
    def add(self, second: int, endpoint: str, counts: Mapping[int, int], failures: int) -> None:
        """One endpoint's requests that completed in ``second`` (called as the aggregator merges them)."""
        slot = self.seconds.setdefault(second, {})
        histogram = LatencyHistogram(counts)
        slot.setdefault(None, Measured()).add(histogram, failures)
        wanted = self.wanted.get(endpoint)
        if wanted is None:
            wanted = self.wanted[endpoint] = any(s.matches(endpoint) for s in self.selectors)
        if wanted:
            slot.setdefault(endpoint, Measured()).add(histogram, failures)

    # -- once a second -------------------------------------------------------------------------------------------
    def check(self, second: int) -> None:
        """Slide the windows over the seconds now final; judge the running stage on its last window."""
        self.slide(upto=second - self.final_after_s)
        for old in [s for s in self.seconds if s < second - self.keep_s]:
            del self.seconds[old]
        index = self.agg.current_stage
        if index is None or self.agg.stop_reason is not None:
            return
        stage = self.agg.stages[index]
        if stage["steady_from"] is None:
            return
        end = second - COMPLETE_AFTER_S  # only complete seconds: [end - window, end)
        server_points: dict[str, list] | None = None
        for position, rule in enumerate(self.tables[index]):
            if not rule.judged_mid_run or second - stage["steady_from"] < rule.judged_from_s:
                continue
            window = rule.mid_run_window_s
            if rule.server is not None:
                if server_points is None:
                    server_points = self._server_points()
                values = tuple(v for t, v in server_points.get(rule.server, ()) if end - window <= t < end)
                found = [(rule.server, Samples(values))] if values else []
            else:
                found = list(self._window(rule, end - window, end))
            for subject, data in found:
                value = rule.value_of(data)
                if rule.breached(value):  # the one rule validation uses too (strict)
                    self._breach(stage, position, rule, subject, float(value), second, window)  # type: ignore[arg-type]
                    if self.agg.stop_reason is not None:
                        return

    def _window(self, rule: Threshold, start: int, end: int) -> Iterator[tuple[str | None, Measured]]:
        """``rule``'s subjects over the seconds ``[start, end)``, each merged exactly."""
        seconds = [self.seconds.get(s, {}) for s in range(start, end)]
        if rule.endpoints is None:
            measured = Measured(duration_s=float(end - start))
            for slot in seconds:
                if None in slot:
                    measured.add(slot[None].histogram, slot[None].failures)
            if self.open_model:
                counts = [self.agg.iterations.per_second.get(s) for s in range(start, end)]
                measured.iterations = sum(c[0] for c in counts if c)
                measured.dropped = sum(c[1] for c in counts if c)
            yield None, measured
            return
        seen = {name for slot in seconds for name in slot if name is not None}
        for subject, members in rule.endpoints.subjects(seen, label=rule.name):
            measured = Measured(duration_s=float(end - start))
            for slot in seconds:
                for member in members:
                    if member in slot:
                        measured.add(slot[member].histogram, slot[member].failures)
            yield subject, measured

    def _server_points(self) -> dict[str, list]:
        out = getattr(getattr(self.agg.environment, "parsed_options", None), "stampede_out", "")
        return read_live_points(os.path.join(os.path.dirname(out), LIVE_FILE_NAME)) if out else {}

    def _breach(self, stage: dict, position: int, rule: Threshold, subject: str | None, value: float, second: int,
                window: int) -> None:
        label = rule.label(subject if rule.endpoints is not None else None)
        breach = {
            "stage": stage["name"], "metric": rule.metric, "threshold": rule.limit, "value": value, "at": second,
            "window_s": window, "name": label, "endpoint": subject if rule.endpoints is not None else None,
            "stat": rule.stat, "source": rule.source,
        }
        key = (stage["name"], position, subject)
        if key not in self.breached:
            self.breached.add(key)
            self.agg.breaches.append(breach)
            logger.warning("stampede: %s breached %s: %.4g (must be %s %.4g)", stage["name"], label, value, rule.op,
                           rule.limit)
        if rule.aborts:
            self.agg.request_stop(f"threshold {rule.metric} ({label}) breached in stage {stage['name']}: "
                                  f"{value:.4g}, must be {rule.op} {rule.limit:g}", kind=StopKind.ABORT, breach=breach)

    # -- rolling windows for the verdict -------------------------------------------------------------------------
    def slide(self, upto: int) -> None:
        """Push every final second up to ``upto`` into the rolling windows of its stage's windowed thresholds."""
        timeline = self.agg.timeline
        if self.slid_upto is None:
            if not timeline:
                return
            self.slid_upto = min(timeline) - 1
        for second in range(self.slid_upto + 1, upto + 1):
            self.slid_upto = second
            entry = timeline.get(second)
            if entry is None:  # before the first stage, or after the load ended
                continue
            index, phase = entry[0], entry[1]
            parts = PARTS if phase == "steady" else PARTS[:1]
            for part in parts:
                self.part_start.setdefault((index, part), second)
                self.part_seconds[(index, part)] += 1
            slot = self.seconds.get(second, {})
            for position, rule in enumerate(self.tables[index]):
                if rule.window_s and rule.server is None:
                    for part in parts:
                        self._push(index, position, rule, part, second, slot)

    def _push(self, index: int, position: int, rule: Threshold, part: str, second: int,
              slot: Mapping[str | None, Measured]) -> None:
        if rule.endpoints is None:
            subjects: list[tuple[str | None, tuple]] = [(None, ())]
        else:
            known = {key[3] for key in self.windows if key[:3] == (index, position, part)}
            found = dict(rule.endpoints.subjects([n for n in slot if n is not None], label=rule.name))
            if rule.endpoints.each:
                found = {s: m for s, m in found.items() if m} | {s: (s,) for s in known}
            subjects = list(found.items())
        for subject, members in subjects:
            key = (index, position, part, subject)
            window = self.windows.get(key)
            if window is None:
                window = self.windows[key] = RollingWindow(rule.window_s, start=self.part_start[(index, part)])
            measured = Measured()
            for member in (members if rule.endpoints is not None else (None,)):
                if member in slot:
                    measured.add(slot[member].histogram, slot[member].failures)
            iterations = dropped = None
            if self.open_model and rule.endpoints is None:
                counts = self.agg.iterations.per_second.get(second) or (0, 0)
                iterations, dropped = counts[0], counts[1]
            window.push(second, measured.histogram if measured.requests else None, measured.failures, iterations, dropped)
            judged = window.measured()
            if judged is not None and rule.endpoints is not None and not judged.requests:
                judged = None  # a window without requests to the endpoint measured nothing
            self.worst.setdefault(key, Worst()).offer(rule, rule.value_of(judged) if judged else None, second)

    def finish(self) -> dict[str, Any]:
        """Every final second slid; ``{stage: {threshold: {part: {subject: worst}, "seconds": {part: n}}}}``."""
        last = max([*self.agg.timeline, *self.seconds], default=None)
        if last is not None:
            self.slide(upto=last)
        return self.snapshot()

    def snapshot(self) -> dict[str, Any]:
        """The worst windows so far, of the seconds slid so far (a checkpoint's copy; :meth:`finish` slides the rest)."""
        windows: dict[str, dict[str, dict[str, Any]]] = {}
        for index, rules in enumerate(self.tables):
            for position, rule in enumerate(rules):
                if not rule.window_s or rule.server is not None:
                    continue
                entry = windows.setdefault(str(index), {}).setdefault(str(position), {})
                entry["seconds"] = {part: self.part_seconds.get((index, part), 0) for part in PARTS}
                for part in PARTS:
                    entry[part] = {
                        key[3] or "": worst.to_dict() for key, worst in self.worst.items() if key[:3] == (index, position, part)
                    }
        return windows
