"""Which targets may receive load: production (by name or by address), unknown hosts, allowed hours."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from stampede.surfaces.airflow_config import environments_override

from stampede.plan.environments import (
    EnvironmentsError, TargetRefused, check_allowed_hours, load_environments, resolve_target,
)

CONFIG = """
environments:
  local: {allow_load: true, max_users: 50}
  staging:
    base_urls: ["https://staging.example.invalid/v1"]
    allow_load: true
    allowed_hours: "22:00-06:00"
  production:
    base_urls: ["https://api.example.invalid/v1", "http://localhost:1/v1"]
    allow_load: false
"""


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
    ],
)
def test_refused_targets_name_the_reason_and_the_fix(target, expected):
    with pytest.raises(TargetRefused) as refused:
        resolve_target(target, load_environments(CONFIG))
    assert expected in str(refused.value) and "fix:" in str(refused.value)
    assert "\n" not in str(refused.value)


def test_loopback_is_local_when_production_shares_no_address():
    environments = load_environments(CONFIG.replace(', "http://localhost:1/v1"', ""))
    assert resolve_target("http://127.0.0.1:9/v1", environments).name == "local"
    assert resolve_target("https://staging.example.invalid/v1", environments).name == "staging"


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
    staging = load_environments(CONFIG)["staging"]
    assert staging.is_allowed_at(now) is allowed


def test_outside_allowed_hours_names_the_next_allowed_time():
    staging = load_environments(CONFIG)["staging"]
    with pytest.raises(TargetRefused) as refused:
        check_allowed_hours(staging, at(12, 15))
    assert "12:15 UTC is outside staging's allowed hours (22:00-06:00 UTC)" in str(refused.value)
    assert "fix: run at or after 2026-03-04 22:00 UTC" in str(refused.value)


def test_a_list_of_windows():
    environments = load_environments(
        'environments: {staging: {allow_load: true, allowed_hours: ["01:00-02:00", "13:30-14:00"]}}'
    )
    staging = environments["staging"]
    assert [staging.is_allowed_at(at(h, m)) for h, m in [(1, 30), (2, 0), (13, 45), (14, 0)]] == [True, False, True, False]
    assert staging.next_allowed(at(2, 5)) == at(13, 30)


@pytest.mark.parametrize("hours", ["22-06", "25:00-01:00", 7, ["22:00-06:00", None]])
def test_bad_allowed_hours_are_one_line_errors(hours):
    import json

    with pytest.raises(EnvironmentsError) as bad:
        load_environments(json.dumps({"environments": {"staging": {"allow_load": True, "allowed_hours": hours}}}))
    assert "environments.staging.allowed_hours" in str(bad.value) and "fix:" in str(bad.value)


def test_the_airflow_variable_overrides_the_file(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_STAMPEDE_ENVIRONMENTS", '{"environments": {"qa": {"allow_load": true, "max_users": 7}}}')
    environments = load_environments(environments_override())
    assert set(environments) == {"qa"} and environments["qa"].max_users == 7


def test_no_variable_means_the_file(monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_STAMPEDE_ENVIRONMENTS", raising=False)
    assert environments_override() is None
    assert "production" in load_environments(environments_override())
