"""The master's interval bins (``stampede.load.intervals``): coarse, per long stage, and what the drift analysis reads."""

from __future__ import annotations

import json

import numpy as np

from stampede.analysis.drift import ALL_REQUESTS, find_drift
from stampede.core.histogram import LatencyHistogram, coarse_bucket
from stampede.core.records import SeriesPoint, StageResult
from stampede.load.intervals import IntervalBins

START = 1_800_000_000


def _stage(name: str, duration_s: int) -> StageResult:
    return StageResult(name=name, scenario="soak", users=50, duration_s=duration_s, requests=1, failures=0, rps=1.0,
                       p50_ms=1.0, p95_ms=1.0, p99_ms=1.0, max_ms=1.0, error_rate=0.0, judged_on="steady")


def test_short_stages_are_not_binned_and_long_ones_keep_coarse_counts():
    stages = [{"name": "warm", "duration_s": 60, "start": START}, {"name": "soak", "duration_s": 1800, "start": START + 60}]
    bins = IntervalBins(stages)
    fine = LatencyHistogram()
    for ms in (10.0, 10.01, 10.02, 250.0):
        fine.record_ms(ms)
    bins.add(0, START + 5, "GET /a", fine.to_dict(), 0)
    bins.add(1, START + 60 + 121, "GET /a", {str(k): v for k, v in fine.to_dict().items()}, 1)  # keys as JSON gives them
    bins.add(1, START + 60 + 130, "GET /a", fine.to_dict(), 0)
    document = json.loads(json.dumps(bins.to_dict()))
    assert list(document) == ["1"]  # the 60 s stage has none
    soak = document["1"]
    assert soak["interval_s"] == 120 and soak["start"] == START + 60 and list(soak["bins"]) == ["1"]
    entry = soak["bins"]["1"]
    assert (entry["first"], entry["last"]) == (START + 181, START + 190)
    histogram = entry["endpoints"]["GET /a"]["histogram"]
    assert sum(histogram.values()) == 8 and entry["endpoints"]["GET /a"]["failures"] == 1
    assert set(map(int, histogram)) == {coarse_bucket(b) for b in fine.counts}
    assert len(histogram) < len(fine.counts)  # 10.00-10.02 ms share one ~3 % bucket


def test_a_creep_binned_by_the_master_is_found_with_its_start():
    """Thirty minutes at one-second resolution, binned as the master bins them: latency creeps from minute 12."""
    rng = np.random.default_rng(5)
    stages = [{"name": "soak", "duration_s": 1800, "start": float(START), "end": float(START + 1800)}]
    bins = IntervalBins(stages)
    series = []
    for offset in range(1800):
        second = START + offset
        creep = 1 + 0.04 * max(0.0, (offset - 720) / 120)  # 4 % more every 2-minute interval
        for name, median in (("GET /a", 20.0), ("POST /b", 45.0)):
            histogram = LatencyHistogram()
            for ms in rng.lognormal(np.log(median * creep), 0.5, 40):
                histogram.record_ms(float(ms))
            bins.add(0, second, name, histogram.to_dict(), 0)
        series.append(SeriesPoint(t=second, stage="soak", phase="steady", users=50, requests=80, failures=0,
                                  p50_ms=None, p95_ms=None, p99_ms=None))
    drift = find_drift([_stage("soak", 1800)], stages, intervals=json.loads(json.dumps(bins.to_dict())),
                       series=series, server_document=None)
    assert drift.interval_s == 120
    overall = next(f for f in drift.findings if f.subject == ALL_REQUESTS)
    assert overall.start_offset_s == 720 and overall.start_hour == 0 and "12 min in" in overall.title
    assert {f.kind for f in drift.findings} == {"latency"}


def test_the_coarse_lookups_stay_bounded_and_the_bins_exact():
    """A long stage meets a fine bucket after another (rare latencies, for hours): the lookups kept stay few."""
    from stampede.load.intervals import COARSE_LOOKUPS_KEPT

    stages = [{"name": "soak", "duration_s": 86_400, "start": START}]
    bins = IntervalBins(stages)
    expected: dict[int, int] = {}
    for offset in range(3 * COARSE_LOOKUPS_KEPT):  # every second a new fine bucket, 2 ms to ~600 ms
        fine = LatencyHistogram()
        fine.record_us(2_000 + 197 * offset)
        bins.add(0, START + offset, "GET /a", fine.to_dict(), 0)
        for bucket, count in fine.counts.items():
            expected[coarse_bucket(bucket)] = expected.get(coarse_bucket(bucket), 0) + count
        assert len(bins._coarse) <= COARSE_LOOKUPS_KEPT
    histogram: dict[int, int] = {}
    for slot in bins.to_dict()["0"]["bins"].values():  # hourly bins: the fourth hour has begun
        for bucket, count in slot["endpoints"]["GET /a"]["histogram"].items():
            histogram[bucket] = histogram.get(bucket, 0) + count
    assert histogram == expected and sum(histogram.values()) == 3 * COARSE_LOOKUPS_KEPT
