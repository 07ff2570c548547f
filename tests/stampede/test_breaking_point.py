"""The breaking-point search: pure step planning and judging, then a real search against a known capacity.

The integration test's target serves at most 200 requests/s (4 servers, 20 ms
each, FIFO); users with a tiny think time step up until throughput stops
growing, and the search must report the breaking point within ±10 % of 200 req/s.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stampede.infra.fixed_latency_target import FixedLatencyTarget
from stampede.analysis.breaking_point import StepFigures, bisect_level, breaking_point_of, judge_step, plan_levels
from stampede.plan.scenario import Search

THRESHOLDS = {"p95_ms": 500.0, "error_rate": 0.01}


def _step(level: float, rps: float, *, p95: float = 30.0, error_rate: float = 0.0, good: bool | None = None) -> StepFigures:
    return StepFigures(index=1, phase="step", level=level, users=int(level), duration_s=5, requests=int(rps * 5),
                       rps=rps, p50_ms=20.0, p95_ms=p95, p99_ms=p95, error_rate=error_rate, good=good)


@pytest.mark.parametrize(
    ("spec", "cap", "expected"),
    [
        pytest.param(Search(start=4, maximum=32, step_duration_s=6, step_factor=2), None, [4, 8, 16, 32], id="factor"),
        pytest.param(Search(start=100, maximum=1000, step_duration_s=6, step_factor=3), None, [100, 300, 900, 1000],
                     id="factor-ends-at-max"),
        pytest.param(Search(start=10, maximum=50, step_duration_s=6, step_increment=15), None, [10, 25, 40, 50],
                     id="increment"),
        pytest.param(Search(start=1000, maximum=50000, step_duration_s=6, step_factor=2), 5000,
                     [1000, 2000, 4000, 5000], id="clamped-to-the-environment-cap"),
    ],
)
def test_levels_step_up_to_the_maximum(spec, cap, expected):
    assert plan_levels(spec, cap=cap) == expected


def test_judging_thresholds_and_the_knee():
    good, reasons = judge_step(_step(8, 130), _step(4, 66), THRESHOLDS, 0.5)
    assert good and reasons == []
    good, reasons = judge_step(_step(16, 150), _step(8, 130), THRESHOLDS, 0.5)  # +15 % rps for +100 % users
    assert not good and reasons[0].startswith("knee at 16 users: throughput grew +15%")
    good, reasons = judge_step(_step(16, 260, p95=700), _step(8, 130), THRESHOLDS, 0.5)
    assert not good and reasons == ["threshold p95_ms broke at 16 users: 700 ms >= 500 ms"]
    good, reasons = judge_step(_step(16, 255, error_rate=0.01), _step(8, 130), THRESHOLDS, 0.5)
    assert not good and "threshold error_rate broke" in reasons[0]  # strict: equal to the limit breaks


def test_bisection_and_the_reported_point():
    assert bisect_level(16, 32) == 24
    assert bisect_level(16, 17) is None
    steps = [_step(4, 66, good=True), _step(8, 130, good=True), _step(16, 150, good=False), _step(12, 190, good=True)]
    steps[2].reasons = ["knee at 16 users"]
    point = breaking_point_of(steps, cap_reached=False, stopped=None)
    assert (point.users, point.rps, point.reason, point.found) == (12, 190, "knee at 16 users", True)
    assert point.first_bad_level == 16 and point.first_bad_users == 16 and point.max_rps == 190


POLLING_LOCUSTFILE = Path(__file__).with_name("polling_locustfile.py")  # PollingUser


@pytest.mark.integration
def test_search_finds_a_known_capacity_within_ten_percent(tmp_path):
    scenario = tmp_path / "search.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "search", "journeys": {"PollingUser": 1}, "think_time_s": [0.02, 0.05], "locustfile": str(POLLING_LOCUSTFILE),
        "stages": [{"name": "warm", "users": 4, "spawn_rate": 4, "duration_s": 5}],
        "thresholds": {"p95_ms": 500, "error_rate": 0.01},
        "search": {"start_users": 4, "max_users": 32, "step_factor": 2, "step_duration_s": 6, "refine_steps": 2},
        "cleanup": "none",  # it only polls: nothing to clean up, and nothing recorded proves it
    }))
    out = tmp_path / "out"
    with FixedLatencyTarget(20.0, tmp_path, capacity_rps=200) as target:
        completed = subprocess.run(
            [sys.executable, "-m", "stampede.surfaces.cli", "breaking-point", "--target", target.base_url,
             "--scenario", str(scenario), "--workers", "0", "--out", str(out)],
            capture_output=True, text=True, timeout=400,
        )
        capacity = target.capacity_rps
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    point = results["breaking_point"]
    assert results["verdict"] == "pass" and point["found"] is True
    assert abs(point["rps"] - capacity) <= 0.10 * capacity, point
    assert {"users", "rps", "p95_ms", "error_rate", "reason"} <= set(point)
    assert "knee" in point["reason"] or "threshold" in point["reason"]
    steps = results["steps"]
    stepped = [s["level"] for s in steps if s["phase"] != "refine"]
    assert stepped[:3] == [4, 8, 16] and stepped == sorted(stepped)  # stepped up to the first bad level ...
    assert any(s["phase"] == "refine" for s in steps)  # ... then narrowed down
    assert all(s["valid"] and s["requests"] > 0 for s in steps)
    assert steps[0]["rps"] == pytest.approx(4 / (0.020 + 0.035), rel=0.25)  # below capacity: users / (service + think)
    model = results["capacity"]
    assert model["model"] == "usl" and model["points"] == len(steps)
    assert [p["users"] for p in model["predictions"]] == [1000, 5000, 10000, 20000]
    assert all(p["extrapolated"] for p in model["predictions"])  # 1,000 users is far beyond 32
    assert "breaking point:" in completed.stdout


@pytest.mark.integration
def test_one_master_serves_every_step_of_a_search(tmp_path):
    """The search's steps run on one Locust master: its wall time (master start and end included)
    is within 1.15x of the steps' planned durations, and each step is judged on its own figures."""
    from stampede.surfaces.bench.overhead import measured_search

    measured = measured_search(tmp_path)
    print(f"search: {measured['steps']} steps, wall {measured['wall_s']} s for {measured['planned_step_sum_s']} s of "
          f"steps ({measured['ratio']}x; measured step durations {measured['step_sum_s']} s); masters "
          f"{measured['masters']}; levels {measured['levels']}")
    assert len(measured["masters"]) == 1, measured  # one Locust master process, seen running
    assert len(measured["run_dirs"]) == 1 and measured["run_dirs"][0].endswith("/steps"), measured
    assert measured["steps"] >= 4 and measured["levels"][:3] == [4, 8, 16], measured
    assert measured["verdict"] == "pass" and measured["breaking_point"].found, measured
    assert measured["ratio"] <= 1.15, measured
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    durations = [s["duration_s"] for s in results["steps"]]
    assert all(abs(d - 15) <= 1.0 for d in durations), durations  # no pause counted in a step
    # judged the moment each step was complete: the master's final merge of the step holds nothing more
    from stampede.figures.stages import stage_results

    output = json.loads((tmp_path / "out" / "steps" / "locust_output.json").read_text())
    final = stage_results(output, [{"name": s["name"], "users": s["users"]} for s in output["stages"]])
    assert [s["requests"] for s in results["steps"]] == [f.requests for f in final[:len(results["steps"])]]
    # each step's own seconds (steps at the capacity plateau may count the same requests, so the
    # counts are not compared with each other): the master's windows follow one another, none overlaps
    windows = [(s["start"], s["end"]) for s in output["stages"][:len(results["steps"])]]
    assert all(start < end for start, end in windows), windows
    assert all(end <= start for (_, end), (start, _) in zip(windows, windows[1:])), windows
    assert all(f.requests > 0 for f in final[:len(results["steps"])]), final
