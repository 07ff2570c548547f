"""Scenario keys of the open model and the breaking-point search: valid ones parse, bad ones name the field."""

from __future__ import annotations

import copy

import pytest

from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import Scenario, ScenarioError, parse_scenario

OPEN = {
    "name": "open",
    "model": "open",
    "journeys": {"readonly": 1},
    "stages": [
        {"name": "ramp", "start_rate": 10, "rate": 100, "duration_s": 60, "max_users": 200},
        {"name": "hold", "rate": 100, "duration_s": 300, "max_users": 200},
    ],
    "thresholds": {"p95_ms": 200},
}
SEARCH = {
    "name": "search",
    "journeys": {"readonly": 1},
    "stages": [{"name": "warm", "users": 10, "spawn_rate": 5, "duration_s": 10}],
    "search": {"start_users": 100, "max_users": 3200, "step_factor": 2, "step_duration_s": 60, "refine_steps": 3},
}


def test_open_model_stages_parse_and_round_trip():
    scenario = parse_scenario(OPEN)
    ramp, hold = scenario.stages
    assert scenario.model == "open"
    assert (ramp.start_rate, ramp.rate, ramp.users, ramp.spawn_rate) == (10, 100, 200, 200)
    assert (hold.start_rate, hold.rate) == (None, 100)  # constant rate
    assert Scenario.from_dict(scenario.to_dict()) == scenario
    plan = RunPlan(run_id="r", target="http://127.0.0.1:1/v1", environment="local", scenarios=(scenario,), workers=1)
    locust = plan.locust_plan()
    assert locust["model"] == "open" and locust["stages"][0]["rate"] == 100 and locust["stages"][0]["start_rate"] == 10


def test_search_block_parses_and_round_trips():
    scenario = parse_scenario(SEARCH)
    assert (scenario.search.start, scenario.search.maximum, scenario.search.step_factor) == (100, 3200, 2)
    assert scenario.search.knee_efficiency == 0.5
    assert Scenario.from_dict(scenario.to_dict()) == scenario
    assert parse_scenario(SEARCH).model == "closed"


def _with(base: dict, path: str, value):
    data = copy.deepcopy(base)
    target = data
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    if value is None:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return data


@pytest.mark.parametrize(
    ("base", "path", "value", "field"),
    [
        pytest.param(OPEN, "model", "half-open", "model", id="unknown-model"),
        pytest.param(OPEN, "stages.0.users", 10, "stages[0].users", id="users-in-open-model"),
        pytest.param(OPEN, "stages.1.rate", -1, "stages[1].rate", id="negative-rate"),
        pytest.param(OPEN, "stages.1.max_users", None, "stages[1].max_users", id="no-user-pool"),
        pytest.param(OPEN, "stages.1.max_users", 0, "stages[1].max_users", id="empty-user-pool"),
        pytest.param(SEARCH, "search.start_user", 10, "search.start_user", id="misspelt-search-key"),
        pytest.param(SEARCH, "search.max_users", 50, "search.max_users", id="max-below-start"),
        pytest.param(SEARCH, "search.step_users", 100, "search.step_factor", id="factor-and-increment"),
        pytest.param(SEARCH, "search.step_factor", None, "search.step_factor", id="no-step"),
        pytest.param(SEARCH, "search.step_factor", 1.001, "search.step_factor", id="factor-too-small"),
        pytest.param(SEARCH, "search.step_duration_s", None, "search.step_duration_s", id="no-step-duration"),
        pytest.param(SEARCH, "search.refine_steps", 50, "search.refine_steps", id="too-many-refinements"),
        pytest.param(SEARCH, "search.start_rate", 10, "search.start_rate", id="rate-key-in-closed-model"),
    ],
)
def test_bad_new_keys_are_named_in_one_line_with_a_fix(base, path, value, field):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(_with(base, path, value), source="bad.yaml")
    message = str(caught.value)
    assert "\n" not in message and f"{field}:" in message and "fix:" in message


def test_search_with_too_many_steps_is_refused():
    data = _with(SEARCH, "search.step_factor", None)
    data["search"].update(start_users=1, max_users=100000, step_users=1)
    with pytest.raises(ScenarioError, match="search: plans .* steps, more than 40"):
        parse_scenario(data, source="bad.yaml")
