"""The open model: iterations start at the planned arrival rate; those no free user can take are dropped and counted.

Real Locust runs against a target with a known service time: a constant rate
comes out as the rate asked for, and with too few pre-allocated users for a
slow target the shortfall shows as dropped iterations instead of a silently
lower rate (no coordinated omission).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stampede.infra.fixed_latency_target import FixedLatencyTarget
from stampede.steps.preflight import RunRequest, preflight
from stampede.surfaces.sequence import run_load

pytestmark = pytest.mark.integration

POLLING_LOCUSTFILE = Path(__file__).with_name("polling_locustfile.py")  # PollingUser


def _scenario(tmp_path, stage: dict) -> str:
    path = tmp_path / "open.yaml"
    path.write_text(yaml.safe_dump({
        "name": "open", "model": "open", "journeys": {"PollingUser": 1}, "locustfile": str(POLLING_LOCUSTFILE),
        "stages": [stage], "thresholds": {"error_rate": 0.01},
    }))
    return str(path)


def test_constant_arrival_rate_is_met_across_workers(tmp_path):
    scenario = _scenario(tmp_path, {"name": "hold", "rate": 100, "duration_s": 8, "max_users": 20})
    with FixedLatencyTarget(20.0, tmp_path) as target:
        plan = preflight(RunRequest(scenarios=[scenario], target=target.base_url, run_id="open-constant", workers=2, out_dir=str(tmp_path / "run")))
        result = run_load(plan)
    (stage,) = result.stages
    assert result.verdict == "pass"
    assert stage.target_rate == 100
    assert stage.rps == pytest.approx(100, rel=0.05)  # the rate asked for, from two workers at 50/s each
    assert stage.dropped_iterations == 0
    assert stage.iterations == pytest.approx(100 * stage.steady.duration_s, rel=0.05)
    assert 20.0 <= stage.p50_ms <= 25.0


def test_too_few_users_for_a_slow_target_drop_iterations(tmp_path):
    # 5 users x 1 iteration / 200 ms = at most 25 iterations/s can start; 50/s are planned
    scenario = _scenario(tmp_path, {"name": "hold", "rate": 50, "duration_s": 8, "max_users": 5})
    with FixedLatencyTarget(200.0, tmp_path) as target:
        plan = preflight(RunRequest(scenarios=[scenario], target=target.base_url, run_id="open-dropped", workers=0, out_dir=str(tmp_path / "run")))
        result = run_load(plan)
    (stage,) = result.stages
    assert stage.dropped_iterations > 0.3 * stage.iterations
    planned = stage.iterations + stage.dropped_iterations
    assert planned == pytest.approx(50 * stage.steady.duration_s, rel=0.1)  # arrivals did not slow down
    assert stage.rps <= 26
    assert 200.0 <= stage.p50_ms <= 210.0  # requests sent on schedule: the target's own latency
    assert stage.p95_ms < 300.0  # (a busy 2-core machine adds tens of ms to single requests' tails)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())["stages"][0]
    assert saved["dropped_iterations"] == stage.dropped_iterations and saved["target_rate"] == 50
