"""Scenario files: valid ones load into typed records; every bad field gets one clear line."""

from __future__ import annotations

import copy
import textwrap

import pytest

from stampede.plan.scenario import ScenarioError, load_scenario, parse_scenario

VALID = {
    "name": "normal",
    "journeys": {"agent": 60, "broker": 20, "admin": 5, "readonly": 15},
    "think_time_s": [3, 8],
    "stages": [
        {"name": "ramp", "users": 1000, "spawn_rate": 10, "duration_s": 300},
        {"name": "hold", "users": 1000, "spawn_rate": 10, "duration_s": 600},
    ],
    "thresholds": {"p95_ms": 200, "p99_ms": 500, "error_rate": 0.01, "min_rps": 100},
    "abort_on_breach": True,
}


def test_valid_scenario_parses_into_records():
    scenario = parse_scenario(VALID)
    assert scenario.peak_users == 1000
    assert scenario.duration_s == 900
    assert scenario.stages[1].name == "hold"
    assert scenario.thresholds.items() == [("p95_ms", 200), ("p99_ms", 500), ("error_rate", 0.01), ("min_rps", 100)]
    assert scenario.think_time_s == (3.0, 8.0)


def test_round_trip_through_dict_is_lossless():
    scenario = parse_scenario(VALID, source="x.yaml")
    assert type(scenario).from_dict(scenario.to_dict()) == scenario


def test_overrides_scale_users_and_duration():
    scaled = parse_scenario(VALID).with_overrides(users=100, duration_s=90)
    assert [s.users for s in scaled.stages] == [100, 100]
    assert [s.duration_s for s in scaled.stages] == [30, 60]


def _with(path: str, value):
    data = copy.deepcopy(VALID)
    target = data
    keys = path.split(".")
    for key in keys[:-1]:
        target = target[int(key)] if key.isdigit() else target[key]
    last = keys[-1]
    if value is _DELETE:
        del target[int(last) if last.isdigit() else last]
    else:
        target[int(last) if last.isdigit() else last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        pytest.param("colour", "red", "colour", id="unknown-top-level-key"),
        pytest.param("name", "", "name", id="empty-name"),
        pytest.param("journeys", {}, "journeys", id="no-journeys"),
        pytest.param("journeys.agent", -1, "journeys.agent", id="negative-weight"),
        pytest.param("think_time_s", [8, 3], "think_time_s", id="think-min-above-max"),
        pytest.param("stages", [], "stages", id="no-stages"),
        pytest.param("stages.0.users", -5, "stages[0].users", id="negative-users"),
        pytest.param("stages.0.users", "many", "stages[0].users", id="users-not-a-number"),
        pytest.param("stages.1.spawn_rate", 0, "stages[1].spawn_rate", id="zero-spawn-rate"),
        pytest.param("stages.1.duration_s", 0, "stages[1].duration_s", id="zero-duration"),
        pytest.param("stages.0.duration", 10, "stages[0].duration", id="misspelt-stage-key"),
        pytest.param("stages.0.name", _DELETE, "stages[0].name", id="stage-without-name"),
        pytest.param("stages.1.name", "ramp", "stages", id="duplicate-stage-name"),
        pytest.param("thresholds.p90_ms", 100, "thresholds.p90_ms", id="unknown-threshold"),
        pytest.param("thresholds.error_rate", 5, "thresholds.error_rate", id="error-rate-as-percent"),
        pytest.param("abort_on_breach", "yes", "abort_on_breach", id="abort-not-bool"),
    ],
)
def test_bad_field_is_named_in_one_line_with_a_fix(path, value, field):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(_with(path, value), source="bad.yaml")
    message = str(caught.value)
    assert "\n" not in message
    assert f"{field}:" in message
    assert "fix:" in message
    assert message.startswith("scenario bad.yaml:")


def test_unknown_scenario_name_lists_the_known_ones(tmp_path):
    (tmp_path / "alpha.yaml").write_text("name: alpha\n")
    with pytest.raises(ScenarioError, match="no scenario named 'beta'; fix: use one of alpha"):
        load_scenario("beta", directory=tmp_path)


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\nstages: [\n  - {name: a\n")
    with pytest.raises(ScenarioError, match=r"broken.yaml: line \d+ is not valid YAML"):
        load_scenario(str(path))


def test_custom_locustfile_is_resolved_relative_to_the_scenario(tmp_path):
    (tmp_path / "mine.py").write_text("# a team's own journeys\n")
    path = tmp_path / "team.yaml"
    path.write_text(textwrap.dedent("""
        name: team
        journeys: {ShopperUser: 1}
        locustfile: mine.py
        stages: [{name: hold, users: 5, spawn_rate: 5, duration_s: 10}]
    """))
    assert load_scenario(str(path)).locustfile == str(tmp_path / "mine.py")
    path.write_text(path.read_text().replace("mine.py", "missing.py"))
    with pytest.raises(ScenarioError, match="locustfile: 'missing.py' not found"):
        load_scenario(str(path))
