"""The master's interval bins: each long stage's requests per endpoint, an hour (or a twelfth of the stage) at a time.

What only time shows (latency that creeps up hour over hour, error bursts) is judged after the run
by :mod:`stampede.analysis.drift` from these bins: per stage, per interval since the stage's start,
per endpoint, a coarse histogram (``stampede.core.histogram.coarse_bucket``: 32 buckets an octave)
and the failures. A day of 20 endpoints is ~90,000 counts (the bench's synthetic day: 92,998),
a few thousand more an hour. Held in memory for the whole run, that was ~10 MiB of the master over a day
(measured with tracemalloc), and in the memory bench (a 20-minute stage: a bin a minute) a steady
~1 MiB/h; so a finished bin goes to the figure stream with the next checkpoint and leaves the master
(:meth:`IntervalBins.finished`, :meth:`IntervalBins.forget`), which reads the bins back when it writes
its output (:meth:`IntervalBins.to_dict`). A second reported after its bin was streamed starts a part
of the same bin; parts add up exactly (:func:`add_bin`). Stages shorter than ``DRIFT_MIN_STAGE_S`` are
not binned at all. Written as ``intervals`` in the master's output::

    {"<stage index>": {"interval_s": 3600, "start": <stage start, epoch s>,
                       "bins": {"<n>": {"first": s, "last": s, "endpoints": {name: {"histogram": {µs: n}, "failures": n}}}}}}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from stampede.core.histogram import coarse_bucket
from stampede.core.thresholds import drift_interval_s


# fine bucket -> coarse bucket lookups kept: the buckets seen lately (a few thousand at most in any minute of a
# run), not every fine bucket of the day (~1,024 an octave per endpoint, gained for hours: ~1 MiB and growing)
COARSE_LOOKUPS_KEPT = 4096


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
                if len(coarse) >= COARSE_LOOKUPS_KEPT:
                    coarse.clear()
                key = coarse[fine] = coarse_bucket(fine)
            histogram[key] = histogram.get(key, 0) + int(count)
        entry["failures"] += int(failures)

    def finished(self, before: int) -> dict[str, dict[str, dict[str, Any]]]:
        """The bins whose interval ended before ``before`` (epoch s), as the stream carries them: by stage, by number."""
        done: dict[str, dict[str, dict[str, Any]]] = {}
        for index, bins in self.bins.items():
            start = int(self.stages[index].get("start") or 0)
            for number, slot in bins.items():
                if start + (number + 1) * self.width[index] <= before:
                    done.setdefault(str(index), {})[str(number)] = slot
        return done

    def forget(self, streamed: Mapping[str, Mapping[str, Any]]) -> None:
        """Drop the bins of :meth:`finished` once they are on disk."""
        for index, numbers in streamed.items():
            bins = self.bins.get(int(index), {})
            for number in numbers:
                bins.pop(int(number), None)

    def to_dict(self, streamed: Iterable[Mapping[str, Mapping[str, Any]]] = ()) -> dict[str, Any]:
        """Every bin: those in ``streamed`` (what :meth:`finished` gave, read back from the stream) and those held."""
        merged: dict[int, dict[int, dict[str, Any]]] = {}
        for part in [*streamed, {str(i): {str(n): b for n, b in bins.items()} for i, bins in self.bins.items()}]:
            for index, numbers in part.items():
                for number, slot in numbers.items():
                    add_bin(merged.setdefault(int(index), {}), int(number), slot)
        return {
            str(index): {
                "interval_s": self.width[index], "start": self.stages[index].get("start"),
                "bins": {str(n): bins[n] for n in sorted(bins)},
            }
            for index, bins in sorted(merged.items())
        }


def add_bin(bins: dict[int, dict[str, Any]], number: int, part: Mapping[str, Any]) -> None:
    """Add one part of bin ``number`` (in memory, or read back from the stream with string keys) into ``bins``."""
    slot = bins.get(number)
    if slot is None:
        slot = bins[number] = {"first": part["first"], "last": part["last"], "endpoints": {}}
    slot["first"], slot["last"] = min(slot["first"], part["first"]), max(slot["last"], part["last"])
    for endpoint, figures in part["endpoints"].items():
        entry = slot["endpoints"].setdefault(endpoint, {"histogram": {}, "failures": 0})
        histogram = entry["histogram"]
        for bucket, count in figures["histogram"].items():
            key = int(bucket)
            histogram[key] = histogram.get(key, 0) + count
        entry["failures"] += figures["failures"]
