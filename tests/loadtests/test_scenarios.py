"""Every shipped scenario loads, and the seed's scenarios say what the seed plan says."""

from __future__ import annotations

import pytest

from stampede.plan.scenario import SCENARIO_DIR, available_scenarios, load_scenario

SEED_MIX = {"agent": 60.0, "broker": 20.0, "admin": 5.0, "readonly": 15.0}
STOCK_JOURNEYS = set(SEED_MIX)  # the `journey` names of stampede.loadtests.journeys (not imported: locust patches gevent)
SEED_SCENARIOS = ("normal", "peak", "stress", "spike", "endurance")
SHIPPED = (*SEED_SCENARIOS, "demo", "smoke")


def users(name: str) -> list[int]:
    return [s.users for s in load_scenario(name).stages]


def durations(name: str) -> list[int]:
    return [s.duration_s for s in load_scenario(name).stages]


def test_every_seed_and_demo_scenario_ships() -> None:
    assert set(SHIPPED) <= set(available_scenarios())


@pytest.mark.parametrize("name", available_scenarios(SCENARIO_DIR))
def test_scenario_loads_and_is_complete(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.name == name
    assert scenario.description.strip()
    assert set(scenario.journeys) <= STOCK_JOURNEYS
    assert scenario.thresholds.items(), "every shipped scenario judges something"


@pytest.mark.parametrize("name", available_scenarios(SCENARIO_DIR))
def test_every_stage_reaches_its_users_within_its_duration(name: str) -> None:
    previous = 0
    for stage in load_scenario(name).stages:
        ramp_s = abs(stage.users - previous) / stage.spawn_rate
        assert ramp_s <= stage.duration_s, f"{name}/{stage.name} needs {ramp_s:.0f}s to reach {stage.users} users"
        previous = stage.users


@pytest.mark.parametrize("name", SEED_SCENARIOS)
def test_seed_scenarios_use_the_seed_mix_and_think_time(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.journeys == SEED_MIX
    assert scenario.think_time_s == (3.0, 8.0)
    assert scenario.locustfile is None  # the stock journeys
    assert scenario.stages[-1].users == 0 < scenario.stages[-2].users, "ends with a ramp-down"


def test_normal_is_the_seeds_normal_load() -> None:
    scenario = load_scenario("normal")
    assert users("normal") == [100, 1000, 1000, 0]
    assert durations("normal") == [120, 300, 600, 120]
    assert dict(scenario.thresholds.items()) == {"p95_ms": 200, "p99_ms": 500, "error_rate": 0.01, "min_rps": 100}
    assert scenario.abort_on_breach


def test_peak_holds_5000_users() -> None:
    scenario = load_scenario("peak")
    assert scenario.peak_users == 5000
    assert max(s.duration_s for s in scenario.stages if s.users == 5000) >= 600
    assert dict(scenario.thresholds.items()) == {"p95_ms": 500, "error_rate": 0.05}


def test_stress_climbs_to_20000_and_does_not_abort() -> None:
    scenario = load_scenario("stress")
    assert users("stress") == [1000, 5000, 10000, 15000, 20000, 0]
    assert durations("stress")[1:5] == [300, 300, 300, 300]
    assert dict(scenario.thresholds.items()) == {"p95_ms": 1000, "error_rate": 0.10}
    assert scenario.abort_on_breach is False  # breaching is the point: find the breaking point


def test_spike_surges_to_5000_in_10_seconds_and_recovers() -> None:
    scenario = load_scenario("spike")
    assert users("spike") == [100, 5000, 5000, 100, 100, 0]
    assert durations("spike") == [60, 10, 180, 10, 60, 10]
    surge = scenario.stages[1]
    assert (surge.users - 100) / surge.spawn_rate <= 10


def test_endurance_holds_1000_users_for_24_hours_judged_as_normal() -> None:
    scenario = load_scenario("endurance")
    assert users("endurance") == [1000, 1000, 0]
    assert durations("endurance") == [300, 24 * 3600, 300]
    assert scenario.thresholds == load_scenario("normal").thresholds


def test_demo_fits_a_laptop_minute() -> None:
    scenario = load_scenario("demo")
    assert len(scenario.stages) == 2
    assert 20 <= scenario.peak_users <= 100
    assert scenario.duration_s <= 60
    assert scenario.think_time_s[1] <= 3
    assert scenario.abort_on_breach


def test_smoke_is_tiny() -> None:
    scenario = load_scenario("smoke")
    assert scenario.peak_users <= 10
    assert 10 <= scenario.duration_s <= 15
