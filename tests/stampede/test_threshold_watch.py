"""The master's live judge, on the real aggregator: per-endpoint aborts not before their delay, rolling windows.

Each test drives a real ``RunAggregator`` second by second, as its ticker does (reports arrive,
seconds are merged, then judged), in a subprocess: importing Locust monkey-patches gevent, which
the test process must not get.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

DRIVER = textwrap.dedent('''
    import json, sys, types
    from stampede.core.histogram import LatencyHistogram
    from stampede.core.thresholds import Threshold
    from stampede.load.aggregator import RunAggregator
    from stampede.plan.scenario import parse_scenario
    from stampede.plan.run_plan import RunPlan
    from dataclasses import asdict

    spec = json.loads(sys.argv[1])
    scenario = parse_scenario(spec["scenario"])
    plan = RunPlan(run_id="w", target="http://127.0.0.1:1/v1", environment="local", scenarios=(scenario,), workers=0)
    env = types.SimpleNamespace(runner=None, parsed_options=None)
    agg = RunAggregator(env, plan.locust_plan())
    agg.current_stage, agg.stages[0]["steady_from"] = 0, 1000
    stopped_at = None
    for second in range(1000, 1000 + spec["seconds"]):
        agg.timeline[second] = (0, "steady", 5)
        endpoints = {}
        for name, ms in spec["latency"].items():
            slow = spec.get("burst") and name in spec["burst"]["endpoints"] and second in range(*spec["burst"]["seconds"])
            h = LatencyHistogram()
            for _ in range(20):
                h.record_ms(spec["burst"]["ms"] if slow else ms)
            endpoints[name] = [h.to_dict(), 0, {}]
        report = {"seconds": {second: endpoints}}
        if spec.get("iterations"):
            from stampede.load import open_model
            report[open_model.REPORT_KEY] = {second: spec["iterations"]}
        agg.add_report(report)
        agg.fold(upto=second)
        agg.check_abort(second + 1)
        if agg.stop_reason and stopped_at is None:
            stopped_at = second + 1
            break
    print(json.dumps({"stopped_at": stopped_at, "stop": agg.stop_reason, "breaches": agg.breaches,
                      "windows": agg.watch.finish()}))
''')


def drive(scenario: dict, *, seconds: int, latency: dict, burst: dict | None = None,
          iterations: list[int] | None = None) -> dict:
    spec = {"scenario": scenario, "seconds": seconds, "latency": latency, "burst": burst, "iterations": iterations}
    completed = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(spec)], capture_output=True, text=True,
                               timeout=120)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def scenario_with(*rules: dict) -> dict:
    return {"name": "w", "journeys": {"PollingUser": 1}, "stages": [{"name": "hold", "users": 5, "spawn_rate": 5,
                                                                    "duration_s": 120}], "thresholds": list(rules)}


SLOW_ROUTE = {"GET /listings": 100.0, "GET /escrows": 5.0, "GET /escrows/{id}": 6.0}


def test_the_slow_route_aborts_exactly_when_its_delay_has_passed_and_the_others_never_breach():
    result = drive(scenario_with(
        {"stat": "p95", "below": 50, "endpoint": "GET /listings", "abort": True, "delay_s": 8, "window_s": 3},
        {"stat": "p95", "below": 50, "pattern": "GET /escrows.*", "each": True, "abort": True, "delay_s": 0},
        {"stat": "max", "below": 50, "endpoint": "GET /escrows", "abort": True, "delay_s": 0, "window_s": 2},
    ), seconds=40, latency=SLOW_ROUTE)
    # breached from the first second, but judged only once 8 s of steady load have passed
    assert result["stopped_at"] == 1008
    assert result["stop"]["kind"] == "abort" and "GET /listings" in result["stop"]["reason"]
    (breach,) = result["breaches"]
    assert (breach["endpoint"], breach["metric"], breach["window_s"], breach["threshold"]) == ("GET /listings", "p95_ms", 3, 50.0)
    assert breach["value"] >= 100


def test_without_a_delay_the_first_window_still_lies_in_complete_steady_seconds():
    result = drive(scenario_with(
        {"stat": "p99", "below": 50, "endpoints": ["GET /listings", "GET /escrows"], "abort": True, "delay_s": 0,
         "window_s": 2, "name": "reads"},
    ), seconds=40, latency=SLOW_ROUTE)
    assert result["stopped_at"] == 1005  # the window (2 s) plus the 3 s until every worker has reported
    assert result["breaches"][0]["endpoint"] == "reads"


def test_a_breach_without_abort_is_recorded_and_the_load_goes_on():
    result = drive(scenario_with({"stat": "p95", "below": 50, "endpoint": "GET /listings", "abort": False,
                                  "delay_s": 4, "window_s": 2}), seconds=20, latency=SLOW_ROUTE)
    assert result["stopped_at"] is None
    assert [(b["endpoint"], b["at"]) for b in result["breaches"]] == [("GET /listings", 1005)]  # once, at its delay


def test_a_burst_breaks_only_the_windowed_threshold_and_its_worst_window_is_kept():
    """Three slow seconds in sixty: the stage's p95 holds, "p95 below 50 ms over 5 s windows" does not."""
    result = drive(scenario_with(
        {"stat": "p95", "below": 50, "endpoint": "GET /escrows", "window_s": 5},
        {"stat": "p95", "below": 50, "pattern": "GET /.*", "each": True, "window_s": 5},
        {"stat": "p95", "below": 50, "endpoint": "GET /never", "window_s": 5},
        {"stat": "p95", "below": 50, "window_s": 90},
    ), seconds=60, latency=SLOW_ROUTE, burst={"endpoints": ["GET /escrows"], "seconds": [1030, 1033], "ms": 400.0})
    assert result["stopped_at"] is None  # nothing aborts; the breaches mid-run are recorded
    assert sorted((b["endpoint"], b["name"]) for b in result["breaches"]) == [
        ("GET /escrows", "GET /escrows p95 < 50 ms over 5 s windows"),
        ("GET /escrows", "GET /escrows p95 < 50 ms over 5 s windows"),  # the same route, matched by the pattern
        ("GET /listings", "GET /listings p95 < 50 ms over 5 s windows"),
    ]
    assert all(1030 < b["at"] <= 1040 for b in result["breaches"] if b["endpoint"] == "GET /escrows")
    windows = result["windows"]["0"]
    escrows = windows["0"]["steady"]["GET /escrows"]
    assert escrows["value"] >= 400 and 1030 <= escrows["at"] <= 1036 and escrows["windows"] == 56
    each = windows["1"]["steady"]
    assert set(each) == {"GET /listings", "GET /escrows", "GET /escrows/{id}"}
    assert each["GET /escrows/{id}"]["value"] < 50 and each["GET /listings"]["value"] >= 100
    assert windows["2"]["steady"]["GET /never"]["value"] is None  # no window had a request to it
    assert windows["3"]["steady"] == {"": {"value": None, "at": None, "windows": 0}}  # 60 s of steady load, 90 s windows
    assert windows["3"]["seconds"] == {"whole": 60, "steady": 60}


def test_open_model_dropped_iterations_abort_on_the_merged_counts():
    scenario = {"name": "w", "model": "open", "journeys": {"PollingUser": 1},
                "stages": [{"name": "hold", "rate": 100, "max_users": 5, "duration_s": 120}],
                "thresholds": [{"stat": "dropped_rate", "below": 0.1, "abort": True, "delay_s": 0, "window_s": 2},
                               {"stat": "dropped_iterations", "below": 1000, "window_s": 2}]}
    result = drive(scenario, seconds=30, latency={"GET /x": 5.0}, iterations=[60, 40])  # 40 of 100 due dropped
    assert result["stopped_at"] == 1005
    (breach,) = result["breaches"]
    assert (breach["metric"], breach["value"], breach["endpoint"]) == ("dropped_rate", 0.4, None)
    assert result["windows"]["0"]["1"]["steady"][""]["value"] == 80.0  # two seconds of 40 dropped
