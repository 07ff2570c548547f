"""Which targets may receive load: a strict schema, overrides that only narrow, production by name or address."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone

import pytest

from stampede.plan.environments import (
    EnvironmentsError, TargetRefused, check_allowed_hours, classify, load_environments, resolve_target,
)
from stampede.plan.target import parse_target

CONFIG = """
environments:
  local: {allow_load: true, max_users: 50}
  staging:
    base_urls: ["https://staging.example.invalid/v1"]
    allow_load: true
    max_users: 5000
    allowed_hours: "22:00-06:00"
  production:
    base_urls: ["https://api.example.invalid/v1", "http://localhost:1/v1"]
    allow_load: false
"""


@pytest.fixture(autouse=True)
def reviewed(tmp_path, monkeypatch):
    """The reviewed environments file of these tests."""
    path = tmp_path / "environments.yaml"
    path.write_text(CONFIG)
    monkeypatch.setenv("STAMPEDE_ENVIRONMENTS_FILE", str(path))
    return path


def _override(document: dict) -> dict:
    return load_environments(json.dumps(document))


def _problem(call) -> str:
    with pytest.raises((EnvironmentsError, TargetRefused)) as refused:
        call()
    text = str(refused.value)
    assert "\n" not in text and "fix:" in text, text
    return text


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, 4, hour, minute, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        pytest.param("https://api.example.invalid/v1", "belongs to production", id="production-name"),
        pytest.param("http://127.0.0.1:9/v1", "resolves to 127.0.0.1, an address of localhost in production",
                     id="production-address"),
        pytest.param("http://10.20.30.40/v1", "is not listed by any environment", id="unlisted"),
        pytest.param("ftp://127.0.0.1/v1", "is not an http(s) URL", id="not-http"),
        pytest.param("http://API.Example.Invalid./v1", "belongs to production", id="production-name-in-disguise"),
    ],
)
def test_refused_targets_name_the_reason_and_the_fix(target, expected):
    text = _problem(lambda: resolve_target(target, load_environments()))
    assert expected in text


def test_loopback_is_local_when_production_shares_no_address(reviewed):
    reviewed.write_text(CONFIG.replace(', "http://localhost:1/v1"', ""))
    environments = load_environments()
    assert resolve_target("http://127.0.0.1:9/v1", environments).name == "local"
    staging = classify("https://staging.example.invalid/v1", environments,
                       resolver=lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 443))])
    assert staging[0].name == "staging" and staging[1].addresses == ("192.0.2.7",)


def test_a_name_that_resolves_to_loopback_is_not_local(reviewed):
    """Only literal loopback and ``localhost`` are local: any other name must be listed, whatever DNS says today."""
    reviewed.write_text(CONFIG.replace(', "http://localhost:1/v1"', ""))

    def loopback(*_args, **_kwargs):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 8000))]

    text = _problem(lambda: classify("http://sneaky.example.invalid:8000/v1", load_environments(), resolver=loopback))
    assert "host sneaky.example.invalid is not listed by any environment" in text
    env, target = classify("http://localhost:8000/v1", load_environments(), resolver=loopback)
    assert env.name == "local" and target.is_local


# -- the schema: strict, one line per problem -------------------------------------------------------
@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param({"production": {"allow_load": "false"}}, "production.allow_load: must be true or false, unquoted "
                     "(got 'false')", id="quoted-false"),
        pytest.param({"qa": {"allow_load": "true"}}, "qa.allow_load: must be true or false", id="quoted-true"),
        pytest.param({"qa": {"allow_load": 1}}, "qa.allow_load: must be true or false", id="numeric-true"),
        pytest.param({"qa": {"allow_load": True, "max_users": "500"}}, "qa.max_users: must be a whole number",
                     id="quoted-number"),
        pytest.param({"qa": {"allow_load": True, "max_users": 500.0}}, "qa.max_users: must be a whole number",
                     id="float-number"),
        pytest.param({"qa": {"allow_load": True, "max_users": True}}, "qa.max_users: must be a whole number",
                     id="bool-number"),
        pytest.param({"qa": {"allow_load": True, "max_users": -1}}, "qa.max_users: must be 0 or more", id="negative"),
        pytest.param({"qa": {"allow_load": True, "colour": "red"}}, "qa.colour: unknown key", id="unknown-key"),
        pytest.param({"qa": {"allow_load": True, "base_urls": "https://qa.example.invalid/v1"}},
                     "qa.base_urls: must be a list", id="url-not-a-list"),
        pytest.param({"qa": {"allow_load": True, "base_urls": ["http://user:pw@qa.example.invalid/v1"]}},
                     "qa.base_urls[0]: carries a user name or password", id="credentials-in-url"),
        pytest.param({"qa": {"allow_load": True, "base_urls": ["http://qa.example.invalid\\@127.0.0.1/v1"]}},
                     "qa.base_urls[0]: contains a backslash", id="backslash-url"),
    ],
)
def test_the_schema_is_strict_and_every_problem_is_one_line(reviewed, document, expected):
    reviewed.write_text(json.dumps({"environments": document}))
    as_file = _problem(load_environments)
    assert f"environments.{expected}" in as_file
    reviewed.write_text(CONFIG)
    as_variable = _problem(lambda: _override({"environments": document}))
    assert f"stampede_environments.{expected}" in as_variable


def test_a_key_given_twice_is_an_error_not_the_last_one_wins(reviewed):
    reviewed.write_text("environments:\n  production: {allow_load: false, allow_load: true}\n")
    assert "key 'allow_load' is given twice" in _problem(load_environments)


def test_several_problems_are_counted_on_the_one_line():
    text = _problem(lambda: _override({"environments": {"qa": {"allow_load": "yes", "max_users": "9", "x": 1}}}))
    assert text.count("fix:") == 1 and "(and 2 more problems)" in text


# -- overrides only narrow ----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param({"production": {"allow_load": True}}, "production.allow_load: an override may not allow load",
                     id="production-made-loadable"),
        pytest.param({"qa": {"allow_load": True, "base_urls": ["https://api.example.invalid/v1"]}},
                     "qa.base_urls: api.example.invalid is already listed by the reviewed environment production",
                     id="production-host-under-a-new-name"),
        pytest.param({"staging": {"base_urls": ["https://api.example.invalid/v1"]}},
                     "staging.base_urls: an override may not change the hosts", id="production-host-into-staging"),
        pytest.param({"staging": {"max_users": 20000}}, "staging.max_users: 20000 is above the reviewed cap (5000)",
                     id="cap-raised"),
        pytest.param({"staging": {"max_users": 0}}, "staging.max_users: no cap is above the reviewed cap",
                     id="cap-removed"),
        pytest.param({"staging": {"allowed_hours": "12:00-13:00"}}, "staging.allowed_hours: allows minutes the "
                     "reviewed environment does not", id="hours-widened"),
        pytest.param({"staging": {"allowed_hours": []}}, "staging.allowed_hours: allows minutes", id="hours-removed"),
        pytest.param({"local": {"max_users": 100}}, "local.max_users: 100 is above the reviewed cap (50)",
                     id="local-cap-raised"),
        pytest.param({"qa": {"allow_load": True, "base_urls": ["http://127.0.0.1:9/v1"]}},
                     "qa.base_urls: 127.0.0.1 is this machine", id="loopback-under-a-new-name"),
        pytest.param({"staging": {"metrics": {"source": "none"}}}, "staging.metrics: an override may not change",
                     id="metrics-changed"),
    ],
)
def test_an_override_cannot_widen_what_may_receive_load(document, expected):
    assert f"stampede_environments.{expected}" in _problem(lambda: _override({"environments": document}))


def test_the_variable_cannot_make_production_loadable_by_any_route():
    """Every route an operator with Variable access might try leaves production refused."""
    attempts = [
        {"production": {"allow_load": True}},
        {"production": {"allow_load": "false"}},
        {"production": {"base_urls": [], "allow_load": True}},
        {"prod2": {"allow_load": True, "base_urls": ["https://API.example.invalid./v1"]}},
        {"staging": {"base_urls": ["https://api.example.invalid/v1"]}},
    ]
    for attempt in attempts:
        try:
            environments = _override({"environments": attempt})
        except EnvironmentsError:
            continue
        _problem(lambda: resolve_target("https://api.example.invalid/v1", environments))  # noqa: B023


def test_an_override_may_add_a_staging_environment_and_narrow_the_reviewed_ones():
    environments = _override({"environments": {
        "qa": {"allow_load": True, "max_users": 7, "base_urls": ["https://qa.example.invalid/v1"]},
        "staging": {"max_users": 300, "allowed_hours": ["23:00-01:00"]},
        "production": {"base_urls": ["https://api2.example.invalid/v1"]},  # more hosts to protect
        "local": {"allow_load": False},
    }})
    assert environments["qa"].max_users == 7 and environments["qa"].hosts == {"qa.example.invalid"}
    assert environments["staging"].max_users == 300 and environments["staging"].hours_text() == "23:00-01:00"
    assert environments["staging"].hosts == {"staging.example.invalid"}  # untouched
    assert environments["production"].hosts == {"api.example.invalid", "api2.example.invalid", "localhost"}
    assert not environments["local"].allow_load
    assert "belongs to production" in _problem(lambda: resolve_target("https://api2.example.invalid/v1", environments))


def test_no_variable_means_the_reviewed_file(monkeypatch):
    from stampede.surfaces.airflow_config import environments_override

    monkeypatch.delenv("AIRFLOW_VAR_STAMPEDE_ENVIRONMENTS", raising=False)
    assert environments_override() is None
    assert set(load_environments(environments_override())) == {"local", "staging", "production"}


def test_the_airflow_variable_is_applied_on_top_of_the_file(monkeypatch):
    from stampede.surfaces.airflow_config import environments_override

    monkeypatch.setenv("AIRFLOW_VAR_STAMPEDE_ENVIRONMENTS", '{"environments": {"qa": {"allow_load": true, "max_users": 7}}}')
    environments = load_environments(environments_override())
    assert set(environments) == {"local", "staging", "production", "qa"} and environments["qa"].max_users == 7
    assert not environments["production"].allow_load


def test_base_urls_are_stored_canonical():
    staging = load_environments()["staging"]
    assert staging.base_urls == ("https://staging.example.invalid:443/v1",)
    assert parse_target(staging.base_urls[0]).url == staging.base_urls[0]


# -- allowed hours ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("now", "allowed"),
    [
        pytest.param(at(22, 0), True, id="window-start"),
        pytest.param(at(3, 30), True, id="after-midnight"),
        pytest.param(at(5, 59), True, id="last-minute"),
        pytest.param(at(6, 0), False, id="window-end-excluded"),
        pytest.param(at(12, 0), False, id="midday"),
    ],
)
def test_allowed_hours_wrap_midnight(now, allowed):
    staging = load_environments()["staging"]
    assert staging.is_allowed_at(now) is allowed


def test_outside_allowed_hours_names_the_next_allowed_time():
    staging = load_environments()["staging"]
    with pytest.raises(TargetRefused) as refused:
        check_allowed_hours(staging, at(12, 15))
    assert "12:15 UTC is outside staging's allowed hours (22:00-06:00 UTC)" in str(refused.value)
    assert "fix: run at or after 2026-03-04 22:00 UTC" in str(refused.value)


def test_a_list_of_windows(reviewed):
    reviewed.write_text('environments: {staging: {allow_load: true, allowed_hours: ["01:00-02:00", "13:30-14:00"]}}')
    staging = load_environments()["staging"]
    assert [staging.is_allowed_at(at(h, m)) for h, m in [(1, 30), (2, 0), (13, 45), (14, 0)]] == [True, False, True, False]
    assert staging.next_allowed(at(2, 5)) == at(13, 30)


@pytest.mark.parametrize("hours", ["22-06", "25:00-01:00", 7, ["22:00-06:00", None]])
def test_bad_allowed_hours_are_one_line_errors(reviewed, hours):
    reviewed.write_text(json.dumps({"environments": {"staging": {"allow_load": True, "allowed_hours": hours}}}))
    text = _problem(load_environments)
    assert "environments.staging.allowed_hours" in text
