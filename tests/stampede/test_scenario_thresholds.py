"""The thresholds syntax: the seed's mapping unchanged, the list form, one line for every bad key; the plan's tables."""

from __future__ import annotations

import copy
import json

import pytest

from stampede.core.errors import Refusal
from stampede.core.thresholds import Endpoints, Threshold
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import RULE_KEYS, ScenarioError, load_scenario, parse_scenario

BASE = {
    "name": "slo",
    "journeys": {"agent": 1},
    "stages": [
        {"name": "warm", "users": 10, "spawn_rate": 10, "duration_s": 60},
        {"name": "hold", "users": 100, "spawn_rate": 10, "duration_s": 120},
        {"name": "down", "users": 0, "spawn_rate": 10, "duration_s": 10},
    ],
    "abort_on_breach": True,
    "abort": {"delay_s": 30, "window_s": 5},
    "thresholds": [
        {"stat": "p95", "below": 200},
        {"stat": "p99", "below": 300, "endpoint": "POST /auth/login", "abort": False},
        {"stat": "error_rate", "below": 0.001, "endpoints": ["POST /escrows", "PATCH /listings/{id}"], "name": "checkout"},
        {"stat": "p99.9", "below": 900, "pattern": "GET /listings.*", "each": True, "stages": ["hold"]},
        {"stat": "p95", "below": 800, "window_s": 30, "delay_s": 45},
        {"stat": "rps", "above": 50},
        {"stat": "mean", "below": 100, "endpoint": "GET /escrows", "optional": True},
        {"server": "db_pool_waiting", "below": 1},
        {"server": "cpu_pct", "stat": "p90", "below": 80, "window_s": 10},
    ],
}


def with_rule(rule) -> dict:
    data = copy.deepcopy(BASE)
    data["thresholds"] = [rule]
    return data


def test_the_list_form_parses_into_the_one_threshold_type():
    rules = parse_scenario(BASE).threshold_rules
    assert rules[1] == Threshold(stat="p99", op="<", limit=300.0, endpoints=Endpoints(names=("POST /auth/login",)),
                                 abort=False)
    assert rules[2].endpoints == Endpoints(names=("POST /escrows", "PATCH /listings/{id}")) and rules[2].name == "checkout"
    assert rules[3].endpoints == Endpoints(pattern="GET /listings.*", each=True) and rules[3].stages == ("hold",)
    assert (rules[4].window_s, rules[4].delay_s) == (30, 45)
    assert (rules[7].server, rules[7].stat, rules[7].op) == ("db_pool_waiting", "max", "<")  # max by default
    assert rules[6].optional and not rules[0].optional


def test_the_list_form_round_trips_through_a_dict_and_json():
    scenario = parse_scenario(BASE, source="slo.yaml")
    again = type(scenario).from_dict(json.loads(json.dumps(scenario.to_dict())))
    assert again == scenario


def test_the_seed_mapping_is_unchanged_and_its_stock_scenarios_keep_their_thresholds():
    normal = load_scenario("normal")
    assert normal.thresholds.items() == [("p95_ms", 200), ("p99_ms", 500), ("error_rate", 0.01), ("min_rps", 100)]
    assert normal.to_dict()["thresholds"] == {"p95_ms": 200, "p99_ms": 500, "error_rate": 0.01, "min_rps": 100}
    assert [(r.key, r.limit) for r in normal.threshold_rules] == [
        ("p95_ms", 200), ("p99_ms", 500), ("error_rate", 0.01), ("min_rps", 100)]
    seeds = {"peak": {"p95_ms": 500, "error_rate": 0.05}, "stress": {"p95_ms": 1000, "error_rate": 0.10},
             "endurance": {"p95_ms": 200, "p99_ms": 500, "error_rate": 0.01, "min_rps": 100}}
    for name, expected in seeds.items():
        assert dict(load_scenario(name).thresholds.items()) == expected, name


def test_a_list_rule_equal_to_a_seed_key_feeds_the_legacy_view():
    scenario = parse_scenario(BASE)
    assert dict(scenario.thresholds.items()) == {"p95_ms": 200.0, "min_rps": 50.0}


def _plan(data: dict) -> RunPlan:
    return RunPlan(run_id="r", target="http://127.0.0.1:1/v1", environment="local",
                   scenarios=(parse_scenario(data),), workers=0)


def test_each_planned_stage_carries_its_table_with_the_scenarios_abort_settings():
    stages = {s.name: s for s in _plan(BASE).stages}
    warm, hold, down = stages["warm"], stages["hold"], stages["down"]
    assert down.threshold_table == () and not down.judged  # a ramp-down is held to nothing
    # the p99.9 pattern names only hold; the throughput floor applies only at the peak
    assert len(hold.threshold_table) == 9 and len(warm.threshold_table) == 7
    assert all(r.stat != "rps" for r in warm.threshold_table)
    first = hold.threshold_table[0]
    assert (first.abort, first.delay_s, first.abort_window_s) == (True, 30, 5)  # from abort_on_breach and abort:
    assert hold.threshold_table[1].abort is False  # its own setting wins
    assert hold.threshold_table[4].delay_s == 45
    assert hold.abort and hold.thresholds == {"p95_ms": 200.0, "min_rps": 50.0}


def test_the_locust_plan_carries_the_table_as_json():
    plan = _plan(BASE)
    stages = json.loads(json.dumps(plan.locust_plan()))["stages"]
    assert Threshold.from_dict(stages[1]["threshold_table"][3]) == plan.stages[1].threshold_table[3]


@pytest.mark.parametrize(("rule", "field", "words"), [
    pytest.param("p95 < 200", "thresholds[0]", "must be a mapping", id="not-a-mapping"),
    pytest.param({"stat": "p95", "below": 1, "colour": "red"}, "thresholds[0].colour", "unknown key", id="unknown-key"),
    pytest.param({"below": 1}, "thresholds[0].stat", "missing", id="no-stat"),
    pytest.param({"stat": "p955", "below": 1}, "thresholds[0].stat", "percentile must be above 0", id="bad-percentile"),
    pytest.param({"stat": "median", "below": 1}, "thresholds[0].stat", "unknown statistic", id="unknown-stat"),
    pytest.param({"stat": "dropped_iterations", "below": 1}, "thresholds[0].stat", "only in the open model", id="dropped-closed"),
    pytest.param({"stat": "p95"}, "thresholds[0]", "exactly one of below and above", id="no-bound"),
    pytest.param({"stat": "p95", "below": 1, "above": 0}, "thresholds[0]", "exactly one of below and above", id="two-bounds"),
    pytest.param({"stat": "p95", "below": -1}, "thresholds[0].below", "number >= 0", id="negative"),
    pytest.param({"stat": "p95", "below": "fast"}, "thresholds[0].below", "number >= 0", id="not-a-number"),
    pytest.param({"stat": "error_rate", "below": 5}, "thresholds[0].below", "fraction", id="percent"),
    pytest.param({"stat": "p95", "below": 1, "endpoint": "/listings"}, "thresholds[0].endpoint", "<METHOD> <name>", id="no-method"),
    pytest.param({"stat": "p95", "below": 1, "endpoint": "GET /a", "pattern": "x"}, "thresholds[0].pattern", "only one of", id="two-selectors"),
    pytest.param({"stat": "p95", "below": 1, "endpoints": []}, "thresholds[0].endpoints", "non-empty list", id="empty-group"),
    pytest.param({"stat": "p95", "below": 1, "endpoints": ["GET /a", "GET /a"]}, "thresholds[0].endpoints", "twice", id="dup-group"),
    pytest.param({"stat": "p95", "below": 1, "endpoints": ["GET /a", 3]}, "thresholds[0].endpoints[1]", "<METHOD> <name>", id="bad-member"),
    pytest.param({"stat": "p95", "below": 1, "pattern": "GET /(a"}, "thresholds[0].pattern", "not a regular expression", id="bad-regex"),
    pytest.param({"stat": "p95", "below": 1, "each": True}, "thresholds[0].each", "needs endpoints or a pattern", id="each-alone"),
    pytest.param({"stat": "p95", "below": 1, "endpoint": "GET /a", "each": True}, "thresholds[0].each", "alone anyway", id="each-one"),
    pytest.param({"stat": "p95", "below": 1, "stages": "hold"}, "thresholds[0].stages", "list of stage names", id="stages-string"),
    pytest.param({"stat": "p95", "below": 1, "stages": ["hodl"]}, "thresholds[0].stages", "no stage named 'hodl'", id="unknown-stage"),
    pytest.param({"stat": "p95", "below": 1, "stages": ["down"]}, "thresholds[0].stages", "never judged", id="ramp-down-stage"),
    pytest.param({"stat": "p95", "below": 1, "abort": "yes"}, "thresholds[0].abort", "true or false", id="abort-not-bool"),
    pytest.param({"stat": "rps", "above": 1, "abort": True}, "thresholds[0].abort", "after the run only", id="abort-on-rps"),
    pytest.param({"stat": "p95", "below": 1, "delay_s": 1.5}, "thresholds[0].delay_s", "whole seconds", id="delay-float"),
    pytest.param({"stat": "p95", "below": 1, "window_s": 0}, "thresholds[0].window_s", "whole seconds from 1", id="window-zero"),
    pytest.param({"stat": "p95", "below": 1, "window_s": 300}, "thresholds[0].window_s", "longer than every stage", id="window-too-long"),
    pytest.param({"stat": "p95", "below": 1, "optional": 1}, "thresholds[0].optional", "true or false", id="optional-not-bool"),
    pytest.param({"stat": "p95", "below": 1, "name": ""}, "thresholds[0].name", "must be text", id="empty-name"),
    pytest.param({"server": "", "below": 1}, "thresholds[0].server", "sampled series", id="empty-series"),
    pytest.param({"server": "cpu_pct", "stat": "error_rate", "below": 1}, "thresholds[0].stat", "unknown statistic", id="server-stat"),
    pytest.param({"server": "cpu_pct", "below": 1, "endpoint": "GET /a"}, "thresholds[0].endpoint", "judges a series", id="server-endpoint"),
])
def test_every_bad_key_of_a_rule_is_one_line_naming_it_with_a_fix(rule, field, words):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(with_rule(rule), source="slo.yaml")
    message = str(caught.value)
    assert isinstance(caught.value, Refusal) and "\n" not in message
    assert message.startswith(f"scenario slo.yaml: {field}: ") and words in message and "; fix: " in message


def test_two_rules_that_say_the_same_are_refused():
    data = copy.deepcopy(BASE)
    data["thresholds"] = [{"stat": "p95", "below": 200}, {"stat": "p95", "below": 200}]
    with pytest.raises(ScenarioError, match=r"thresholds\[1\]: says the same as thresholds\[0\]"):
        parse_scenario(data)


def test_every_rule_key_is_documented():
    from pathlib import Path

    docs = (Path(__file__).resolve().parents[2] / "docs" / "scenarios.md").read_text()
    assert all(f"`{key}`" in docs for key in RULE_KEYS)


@pytest.mark.parametrize(("mapping", "field"), [
    pytest.param({"p90_ms": 100}, "thresholds.p90_ms", id="unknown-legacy-key"),
    pytest.param("fast", "thresholds", id="not-a-mapping-or-list"),
])
def test_the_mapping_form_keeps_its_errors(mapping, field):
    data = copy.deepcopy(BASE)
    data["thresholds"] = mapping
    with pytest.raises(ScenarioError, match=rf"scenario: {field}: .*; fix: "):
        parse_scenario(data, source="")
