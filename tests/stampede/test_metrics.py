"""Per-stage figures from the master's output, and generator health from outside samples."""

from __future__ import annotations

import pytest

from stampede.core.histogram import LatencyHistogram
from stampede.load.runner import GeneratorSample
from stampede.figures.generator import generator_health
from stampede.figures.stages import stage_results


def _hist(*values_ms: float) -> dict:
    histogram = LatencyHistogram()
    for value in values_ms:
        histogram.record_ms(value)
    return histogram.to_dict()


OUTPUT = {
    "stages": [
        {"name": "ramp", "start": 1000.0, "end": 1010.0, "steady_from": 1006},
        {"name": "hold", "start": 1010.0, "end": 1020.0, "steady_from": 1010},
        {"name": "never", "start": None, "end": None, "steady_from": None},
    ],
    "phase_seconds": {"0/ramp": 6, "0/steady": 4, "1/steady": 10},
    "phases": {
        "0/ramp": {"GET /a": {"histogram": _hist(*[500.0] * 60), "failures": 6, "errors": {"HTTP 503": 6}}},
        "0/steady": {"GET /a": {"histogram": _hist(*[10.0] * 40), "failures": 0, "errors": {}}},
        "1/steady": {
            "GET /a": {"histogram": _hist(*[10.0] * 90), "failures": 0, "errors": {}},
            "POST /b": {"histogram": _hist(*[100.0] * 10), "failures": 1, "errors": {"HTTP 500": 1}},
        },
    },
}
PLANNED = [
    {"name": "ramp", "scenario": "s", "users": 10, "thresholds": {"p95_ms": 200}},
    {"name": "hold", "scenario": "s", "users": 10, "thresholds": {"p95_ms": 200}, "abort": True},
    {"name": "never", "scenario": "s", "users": 10},
]


def test_each_stage_is_judged_on_its_own_steady_requests_only():
    ramp, hold, never = stage_results(OUTPUT, PLANNED)
    # the slow, failing ramp requests are reported apart and do not leak into the judged figures
    assert ramp.judged_on == "steady" and ramp.requests == 40 and ramp.p95_ms == pytest.approx(10, rel=1e-3) and ramp.failures == 0
    assert ramp.ramp.requests == 60 and ramp.ramp.p95_ms == pytest.approx(500, rel=1e-3) and ramp.ramp.error_rate == 0.1
    assert ramp.rps == 10.0 and ramp.ramp.rps == 10.0
    assert hold.requests == 100 and hold.rps == 10.0 and hold.error_rate == 0.01
    assert hold.p50_ms == pytest.approx(10, rel=1e-3) and hold.p99_ms == pytest.approx(100, rel=1e-3) and hold.max_ms >= 100.0
    assert [(e.name, e.requests, e.failures) for e in hold.endpoints] == [("GET /a", 90, 0), ("POST /b", 10, 1)]
    assert hold.endpoints[1].errors == {"HTTP 500": 1} and hold.abort_on_breach
    assert never.requests == 0 and never.p95_ms is None and never.steady is None


def test_a_stage_without_steady_part_is_judged_whole():
    output = {**OUTPUT, "phase_seconds": {"0/ramp": 10}, "phases": {"0/ramp": OUTPUT["phases"]["0/ramp"]}}
    ramp = stage_results(output, PLANNED[:1])[0]
    assert ramp.judged_on == "whole" and ramp.requests == 60 and ramp.p95_ms == pytest.approx(500, rel=1e-3)


def _samples(pid: int, start: float, cpu: list[float]) -> list[GeneratorSample]:
    return [GeneratorSample(t=start + i, role="worker", pid=pid, cpu_pct=c, rss_mib=100 + i) for i, c in enumerate(cpu)]


def test_generator_that_sat_above_the_limit_marks_its_stage():
    samples = _samples(1, 1000.5, [40] * 9) + _samples(2, 1010.5, [95, 97, 99, 96, 98, 60, 50, 40, 30])
    health, saturated = generator_health(samples, OUTPUT["stages"], limit_pct=85)
    assert saturated == {1} and health.saturated
    assert health.cpu_max_pct == 95  # the level it sat at over 5 samples, not a single spike
    assert health.memory_max_mib == 108 and health.processes == 2


def test_a_single_spike_is_not_saturation():
    samples = _samples(1, 1010.5, [40, 40, 100, 40, 40, 40, 40])
    health, saturated = generator_health(samples, OUTPUT["stages"], limit_pct=85)
    assert saturated == set() and not health.saturated
