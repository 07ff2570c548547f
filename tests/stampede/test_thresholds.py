"""The one threshold rule: strict bounds, every statistic, endpoints and patterns, rolling windows."""

from __future__ import annotations

import json
import random

import pytest

from stampede.core.histogram import LatencyHistogram
from stampede.core.records import StepFigures
from stampede.core.thresholds import (
    Endpoints, Measured, RollingWindow, Samples, Threshold, Worst, breaches, legacy_view, percentile_of,
    request_stat, sample_stat, sample_windows, table,
)


def histogram_of(values_ms: list[float]) -> LatencyHistogram:
    histogram = LatencyHistogram()
    for value in values_ms:
        histogram.record_ms(value)
    return histogram


# -- strictness ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("op", "value", "holds"), [
    pytest.param("<", 199.999, True, id="below-just-under"),
    pytest.param("<", 200.0, False, id="below-equal-breaks"),
    pytest.param("<", 200.001, False, id="below-over"),
    pytest.param(">", 100.001, True, id="above-just-over"),
    pytest.param(">", 100.0, False, id="above-equal-breaks"),
])
def test_every_bound_is_strict_as_the_seed_words_it(op, value, holds):
    rule = Threshold(stat="p95", op=op, limit=200.0 if op == "<" else 100.0)
    assert rule.holds(value) is holds
    assert rule.breached(value) is (not holds)


def test_a_missing_value_never_holds_and_is_never_a_breach():
    rule = Threshold(stat="p99.9", op="<", limit=10.0)
    assert rule.holds(None) is False and rule.breached(None) is False


# -- statistics ---------------------------------------------------------------------------------------------
def test_every_latency_statistic_comes_from_the_merged_histogram_within_its_precision():
    rng = random.Random(7)
    values = [rng.uniform(1, 900) for _ in range(5000)]
    first, second = histogram_of(values[:2000]), histogram_of(values[2000:])
    measured = Measured(histogram=LatencyHistogram.merged([first, second]), failures=50, duration_s=20.0)
    ordered = sorted(values)
    for stat, exact in (("p50", ordered[2499]), ("p90", ordered[4499]), ("p95", ordered[4749]),
                        ("p99", ordered[4949]), ("p99.9", ordered[4994]), ("max", ordered[-1])):
        assert request_stat(stat, measured) == pytest.approx(exact, rel=1e-3, abs=0.002), stat
    assert request_stat("mean", measured) == pytest.approx(sum(values) / len(values), rel=1e-3)
    assert request_stat("error_rate", measured) == 0.01
    assert request_stat("rps", measured) == 250.0
    assert request_stat("requests", measured) == 5000.0


def test_no_requests_measure_no_latency_and_no_error_rate_but_a_count_of_zero():
    empty = Measured(duration_s=10.0)
    for stat in ("p50", "p99.9", "max", "mean", "error_rate"):
        assert request_stat(stat, empty) is None, stat
    assert request_stat("requests", empty) == 0.0 and request_stat("rps", empty) == 0.0


def test_dropped_iterations_exist_only_where_iterations_were_counted():
    closed = Measured(histogram=histogram_of([5.0]), duration_s=1.0)
    assert request_stat("dropped_iterations", closed) is None and request_stat("dropped_rate", closed) is None
    open_model = Measured(histogram=histogram_of([5.0]), duration_s=1.0, iterations=90, dropped=10)
    assert request_stat("dropped_iterations", open_model) == 10.0
    assert request_stat("dropped_rate", open_model) == 0.1  # of the 100 iterations that fell due


@pytest.mark.parametrize(("stat", "fraction"), [("p50", 0.5), ("p99.9", 0.999), ("p100", 1.0), ("p0", None),
                                                 ("p101", None), ("p9x", None), ("max", None)])
def test_percentile_names(stat, fraction):
    assert percentile_of(stat) == fraction


def test_server_statistics_of_samples():
    values = (1.0, 4.0, 2.0, 8.0, 3.0)
    assert [sample_stat(s, values) for s in ("max", "min", "mean", "last", "p50", "p100")] == [8.0, 1.0, 3.6, 3.0, 3.0, 8.0]
    assert sample_stat("max", ()) is None
    rule = Threshold(stat="max", op="<", limit=1.0, server="db_pool_waiting")
    assert rule.value_of(Samples(values)) == 8.0 and rule.breached(8.0)


def test_unknown_statistics_are_refused():
    with pytest.raises(ValueError, match="unknown statistic"):
        Threshold(stat="p955", op="<", limit=1.0)
    with pytest.raises(ValueError, match="unknown statistic"):
        Threshold(stat="last", op="<", limit=1.0)  # a server statistic, not one of requests
    with pytest.raises(ValueError, match="op must be"):
        Threshold(stat="p95", op="<=", limit=1.0)


# -- which requests -----------------------------------------------------------------------------------------
SEEN = ["GET /escrows", "GET /escrows/{id}", "POST /escrows", "GET /listings", "GET /listings/{id}"]


def test_a_pattern_must_match_the_whole_name():
    assert Endpoints(pattern="GET /escrows.*").subjects(SEEN) == [("~GET /escrows.*", ("GET /escrows", "GET /escrows/{id}"))]
    assert Endpoints(pattern="/escrows").subjects(SEEN) == [("~/escrows", ())]  # full match, not search


def test_each_judges_every_match_alone_and_a_group_is_merged():
    each = Endpoints(pattern="GET /listings.*", each=True).subjects(SEEN)
    assert each == [("GET /listings", ("GET /listings",)), ("GET /listings/{id}", ("GET /listings/{id}",))]
    assert Endpoints(pattern="DELETE .*", each=True).subjects(SEEN) == [("~DELETE .*", ())]
    group = Endpoints(names=("POST /escrows", "GET /escrows/{id}"))
    assert group.subjects(SEEN, label="escrow writes") == [("escrow writes", ("POST /escrows", "GET /escrows/{id}"))]


def test_a_named_endpoint_is_a_subject_whether_or_not_it_had_requests():
    assert Endpoints(names=("GET /typo",)).subjects(SEEN) == [("GET /typo", ("GET /typo",))]
    # a name labels a group or a pattern; one endpoint stays itself
    assert Endpoints(names=("GET /listings",)).subjects(SEEN, label="listings") == [("GET /listings", ("GET /listings",))]
    assert Endpoints(pattern="POST .*").subjects(SEEN, label="writes") == [("writes", ("POST /escrows",))]


# -- rolling windows ----------------------------------------------------------------------------------------
def test_a_sliding_window_equals_merging_its_seconds_again():
    rng = random.Random(3)
    seconds = {s: histogram_of([rng.uniform(1, 50) * (20 if 40 <= s < 43 else 1) for _ in range(rng.randint(0, 30))])
               for s in range(100)}
    window = RollingWindow(5, start=0)
    rule = Threshold(stat="p95", op="<", limit=300.0, window_s=5)
    worst = Worst()
    for second in range(100):
        window.push(second, seconds[second], failures=second % 2)
        if second < 4:
            assert window.measured() is None  # not a full window of the part yet
            continue
        again = LatencyHistogram.merged(seconds[s] for s in range(second - 4, second + 1))
        measured = window.measured()
        assert measured.histogram.counts == again.counts and measured.requests == again.total
        assert measured.failures == sum(s % 2 for s in range(second - 4, second + 1))
        worst.offer(rule, rule.value_of(measured), second)
    assert worst.windows == 96 and 40 <= worst.at <= 46 and rule.breached(worst.value)


def test_the_worst_window_depends_on_the_direction_of_the_bound():
    floor, ceiling = Threshold(stat="rps", op=">", limit=10.0), Threshold(stat="p95", op="<", limit=10.0)
    low, high = Worst(), Worst()
    for at, value in enumerate([12.0, 4.0, 30.0, None]):
        low.offer(floor, value, at)
        high.offer(ceiling, value, at)
    assert (low.value, low.at, low.windows) == (4.0, 1, 3)
    assert (high.value, high.at) == (30.0, 2)


def test_server_sample_windows_end_at_each_sample_inside_the_part():
    points = [[100.0, 0.0], [102.0, 0.0], [104.0, 2.0], [106.0, 0.0], [108.0, 0.0], [130.0, 9.0]]
    windows = [(t, samples.values) for t, samples in sample_windows(points, 100.0, 120.0, 4.0)]
    assert windows == [(104.0, (0.0, 2.0)), (106.0, (2.0, 0.0)), (108.0, (0.0, 0.0))]


# -- mid-run timing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("delay", "window", "abort_window", "judged_from"), [
    pytest.param(None, None, None, 20, id="defaults: twice the 10 s window"),
    pytest.param(30, None, 10, 30, id="delay"),
    pytest.param(0, 3, None, 6, id="never before the window is complete"),
    pytest.param(8, 3, None, 8, id="delay after a short window"),
    pytest.param(None, 30, 5, 60, id="a rolling window is the abort window"),
])
def test_a_threshold_is_judged_mid_run_from_its_delay_and_never_over_the_ramp(delay, window, abort_window, judged_from):
    rule = Threshold(stat="p95", op="<", limit=1.0, delay_s=delay, window_s=window, abort_window_s=abort_window)
    assert rule.judged_from_s == judged_from


def test_throughput_and_counts_are_never_judged_mid_run():
    assert not Threshold(stat="rps", op=">", limit=1.0, abort=True).aborts
    assert not Threshold(stat="requests", op=">", limit=1.0, abort=True).aborts
    assert Threshold(stat="error_rate", op="<", limit=0.1, abort=True).aborts
    assert Threshold(stat="max", op="<", limit=1.0, server="cpu_pct", abort=True).aborts


# -- the legacy table and transport -------------------------------------------------------------------------
def test_the_seed_mapping_keeps_its_keys_order_and_figures():
    rules = table({"min_rps": 100, "error_rate": 0.01, "p99_ms": 500, "p95_ms": 200})
    assert [(r.metric, r.stat, r.op, r.limit) for r in rules] == [
        ("p95_ms", "p95", "<", 200.0), ("p99_ms", "p99", "<", 500.0), ("error_rate", "error_rate", "<", 0.01),
        ("min_rps", "rps", ">", 100.0)]
    assert legacy_view(rules) == {"p95_ms": 200.0, "p99_ms": 500.0, "error_rate": 0.01, "min_rps": 100.0}
    # an equivalent rule of the list form counts too; one per endpoint or window does not
    assert legacy_view([Threshold(stat="p95", op="<", limit=300.0),
                        Threshold(stat="p99", op="<", limit=1.0, endpoints=Endpoints(names=("GET /a",)))]) == {"p95_ms": 300.0}


def test_the_breaking_point_search_still_judges_a_step_by_the_same_rule():
    step = StepFigures(index=0, phase="step", level=10, users=10, duration_s=10, requests=100, rps=10.0,
                       p50_ms=5.0, p95_ms=200.0, p99_ms=210.0, error_rate=0.0)
    assert [(t.metric, v) for t, v in breaches({"p95_ms": 200, "p99_ms": 500}, step)] == [("p95_ms", 200.0)]


def test_a_threshold_crosses_to_the_master_as_json_and_back():
    rule = Threshold(stat="p99.9", op="<", limit=300.0, endpoints=Endpoints(pattern="GET /.*", each=True),
                     stages=("hold",), abort=True, delay_s=30, window_s=30, abort_window_s=10, optional=True,
                     name="reads")
    assert Threshold.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule
    assert rule.column == "p99_9_ms_worst_30s" and rule.metric == "p99.9_ms"
    assert rule.label("GET /a") == "reads GET /a"
    assert Threshold(stat="p95", op="<", limit=200.0, endpoints=Endpoints(names=("GET /listings",)),
                     window_s=30).label("GET /listings") == "GET /listings p95 < 200 ms over 30 s windows"
