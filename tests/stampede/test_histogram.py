"""The latency histogram: bounded relative error, and exact merges across workers."""

from __future__ import annotations

import random

import pytest

from stampede.core.histogram import LatencyHistogram, bucket_of


def _exact_percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, -(-int(fraction * len(ordered)) // 1) - 1)]


@pytest.mark.parametrize("fraction", [0.5, 0.95, 0.99])
def test_percentiles_within_a_tenth_of_a_percent_of_the_exact_value(fraction):
    rng = random.Random(7)
    values = [rng.lognormvariate(3, 1) for _ in range(50_000)]  # ms, long tail
    histogram = LatencyHistogram()
    for value in values:
        histogram.record_ms(value)
    truth = _exact_percentile(values, fraction)
    assert histogram.percentile_ms(fraction) == pytest.approx(truth, rel=0.001, abs=0.001)


def test_merge_of_worker_histograms_equals_one_histogram_of_all_requests():
    rng = random.Random(1)
    workers = [[rng.expovariate(1 / (10 + 40 * w)) for _ in range(5_000)] for w in range(4)]
    merged = LatencyHistogram.merged(_histogram(v) for v in workers)
    single = _histogram([v for values in workers for v in values])
    assert merged.counts == single.counts
    for fraction in (0.5, 0.95, 0.99):
        assert merged.percentile_ms(fraction) == single.percentile_ms(fraction)


def test_merging_is_not_averaging():
    fast, slow = _histogram([1.0] * 900), _histogram([100.0] * 100)
    merged = LatencyHistogram.merged([fast, slow])
    assert merged.percentile_ms(0.95) == pytest.approx(100.0, rel=0.01)
    average_of_p95 = (fast.percentile_ms(0.95) + slow.percentile_ms(0.95)) / 2
    assert average_of_p95 == pytest.approx(50.5, rel=0.01)  # what averaging tools would report


def test_round_trip_through_plain_dict_survives_msgpack_style_keys():
    histogram = _histogram([0.5, 12.3, 450.0, 12_000.0])
    rebuilt = LatencyHistogram({str(k): v for k, v in histogram.to_dict().items()})
    assert rebuilt.counts == histogram.counts and rebuilt.total == 4


def test_buckets_are_exact_below_2048_us_then_1024_per_octave():
    assert bucket_of(2_047) == 2_047
    assert bucket_of(2_049) == 2_048
    assert bucket_of(123_456) == 123_456 - 123_456 % 64
    assert all((bucket_of(v + 1) - bucket_of(v)) * 1024 <= v + 1 for v in range(2_048, 500_000, 997))
    assert LatencyHistogram().percentile_ms(0.95) is None


def _histogram(values_ms: list[float]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for value in values_ms:
        histogram.record_ms(value)
    return histogram


def test_a_dense_histogram_holds_the_same_counts_and_stops_growing():
    """A stage's histogram merged into for long: the same counts as a sparse one, and flat once its octaves are seen."""
    import tracemalloc

    from stampede.core.histogram import DenseLatencyHistogram

    rng = random.Random(7)
    seconds = []
    for _ in range(4000):  # lognormal latencies around 8 ms with a long tail: new buckets for the whole feed
        second = LatencyHistogram()
        for _ in range(40):
            second.record_us(int(rng.lognormvariate(9.0, 0.6)))
        seconds.append(second.to_dict())
    sparse, dense = LatencyHistogram(), DenseLatencyHistogram()
    held = {}
    for name, histogram in (("sparse", sparse), ("dense", dense)):
        tracemalloc.start()
        for i, counts in enumerate(seconds):
            histogram.merge(counts if i % 3 else {str(b): n for b, n in counts.items()})  # JSON keys too
            if i in (1999, 3999):
                held[(name, i)] = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
    assert dense.to_dict() == sparse.to_dict() and dense.total == sparse.total == len(dense) == 160_000
    assert dense.to_dict() == DenseLatencyHistogram().merge(sparse).to_dict()  # from a LatencyHistogram
    sparse_grew = held[("sparse", 3999)] - held[("sparse", 1999)]
    dense_grew = held[("dense", 3999)] - held[("dense", 1999)]
    assert sparse_grew > 40_000, sparse_grew  # the sparse one still gains buckets in the second half
    assert dense_grew < sparse_grew / 4, (dense_grew, sparse_grew)
    print(f"second half: sparse +{sparse_grew} B, dense +{dense_grew} B")


def test_the_bucket_layout_round_trips_through_octave_and_index() -> None:
    from stampede.core.histogram import _SUB_BUCKETS, bucket_at, bucket_of, octave_and_index

    values_us = [*range(0, 5000), *(int(1.37 ** k) for k in range(20, 70)), 3_600_000_000]
    seen: set[tuple[int, int]] = set()
    for value_us in values_us:
        bucket = bucket_of(value_us)
        octave, index = octave_and_index(bucket)
        assert 0 <= index < _SUB_BUCKETS
        assert bucket_at(octave, index) == bucket
        seen.add((octave, index))
    # each bucket has its own (octave, index): no two buckets share a slot of the dense histogram
    assert len(seen) == len({bucket_of(v) for v in values_us})
