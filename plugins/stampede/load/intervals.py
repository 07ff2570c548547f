"""The master's interval bins: each long stage's requests per endpoint, an hour (or a twelfth of the stage) at a time.

What only time shows (latency that creeps up hour over hour, error bursts) is judged after the run
by :mod:`stampede.analysis.drift` from these bins: per stage, per interval since the stage's start,
per endpoint, a coarse histogram (``stampede.core.histogram.coarse_bucket``: 32 buckets an octave)
and the failures. A day of 20 endpoints is ~90,000 counts (the bench's synthetic day: 92,998),
a few thousand more an hour: ~10 MiB of the master's memory over a day (measured with tracemalloc). Stages shorter than
``DRIFT_MIN_STAGE_S`` are not binned at all. Written as ``intervals`` in the master's output::

    {"<stage index>": {"interval_s": 3600, "start": <stage start, epoch s>,
                       "bins": {"<n>": {"first": s, "last": s, "endpoints": {name: {"histogram": {µs: n}, "failures": n}}}}}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stampede.core.histogram import coarse_bucket
from stampede.core.thresholds import drift_interval_s


class IntervalBins:
    """Per stage, per interval, per endpoint: a coarse histogram and the failures."""

    def __init__(self, stages: list[dict[str, Any]]) -> None:
        self.stages = stages  # the aggregator's own stage records (their ``start`` is set as they begin)
        self.width = {i: drift_interval_s(float(s.get("duration_s") or 0)) for i, s in enumerate(stages)}
        self.bins: dict[int, dict[int, dict[str, Any]]] = {}
        self._coarse: dict[int, int] = {}  # fine bucket -> coarse bucket: a lookup, not a computation, per count

    def add(self, stage_index: int, second: int, endpoint: str, counts: Mapping[Any, int], failures: int) -> None:
        width = self.width.get(stage_index, 0)
        start = self.stages[stage_index].get("start")
        if not width or start is None:
            return
        number = max(0, (second - int(start)) // width)
        slot = self.bins.setdefault(stage_index, {}).setdefault(
            number, {"first": second, "last": second, "endpoints": {}})
        slot["first"], slot["last"] = min(slot["first"], second), max(slot["last"], second)
        entry = slot["endpoints"].setdefault(endpoint, {"histogram": {}, "failures": 0})
        histogram, coarse = entry["histogram"], self._coarse
        for bucket, count in counts.items():
            fine = int(bucket)
            key = coarse.get(fine)
            if key is None:
                key = coarse[fine] = coarse_bucket(fine)
            histogram[key] = histogram.get(key, 0) + int(count)
        entry["failures"] += int(failures)

    def to_dict(self) -> dict[str, Any]:
        return {
            str(index): {
                "interval_s": self.width[index], "start": self.stages[index].get("start"),
                "bins": {str(n): bins[n] for n in sorted(bins)},
            }
            for index, bins in sorted(self.bins.items())
        }
