"""Preflight refuses impossible inputs in one line, before it reads a target or sends anything."""

from __future__ import annotations

import pytest
import yaml

from stampede.core.errors import Refusal
from stampede.infra.canary import Canary
from stampede.plan.run_plan import run_tag_for
from stampede.safety import lease
from stampede.state import tags
from stampede.steps.preflight import RunRequest, preflight
from stampede.steps.teardown import teardown_workers


@pytest.fixture
def canary():
    with Canary() as server:
        yield server


def _refused(canary: Canary, **request) -> str:
    request.setdefault("scenarios", ("smoke",))
    request.setdefault("run_id", "inputs")
    request.setdefault("workers", 0)
    with pytest.raises(Refusal) as refused:
        preflight(RunRequest(target=request.pop("target", canary.base_url), **request))
    text = str(refused.value)
    assert "\n" not in text and "fix:" in text, text
    assert canary.hits() == 0
    return text


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        pytest.param({"duration_s": 0}, "duration_s: must be a whole number from 1", id="duration-zero"),
        pytest.param({"duration_s": -10}, "duration_s: must be a whole number from 1", id="duration-negative"),
        pytest.param({"users": 0}, "users: must be a whole number from 1", id="users-zero"),
        pytest.param({"users": -5}, "users: must be a whole number from 1", id="users-negative"),
        pytest.param({"users": True}, "users: must be a whole number", id="users-bool"),
        pytest.param({"users": 2.5}, "users: must be a whole number", id="users-float"),
        pytest.param({"workers": -1}, "workers: must be a whole number from 0", id="workers-negative"),
        pytest.param({"progress_interval_s": 0}, "progress_interval_s: must be a number of seconds above 0",
                     id="progress-zero"),
        pytest.param({"run_id": ""}, "run_id: must be printable text", id="empty-run-id"),
        pytest.param({"run_id": "a\nb"}, "run_id: must be printable text", id="newline-run-id"),
        pytest.param({"scenarios": ("smoke", "smoke")}, "'smoke' is listed twice", id="same-scenario-twice"),
        pytest.param({"scenarios": ()}, "scenario: none given", id="no-scenario"),
        pytest.param({"scenarios": "smoke"}, "scenarios: must be a list of names", id="scenarios-as-text"),
    ],
)
def test_impossible_values_are_refused_in_one_line(canary, request_, expected):
    assert expected in _refused(canary, **request_)


def test_two_scenario_files_with_one_name_are_refused_before_they_crash_validation(canary, tmp_path):
    paths = []
    for index in range(2):
        path = tmp_path / f"copy{index}.yaml"
        path.write_text(yaml.safe_dump({"name": "normal", "journeys": {"agent": 1},
                                        "stages": [{"name": "hold", "users": 1, "spawn_rate": 1, "duration_s": 5}]}))
        paths.append(str(path))
    assert "two stages of the run are both named 'normal/hold'" in _refused(canary, scenarios=tuple(paths))


def test_a_scenario_whose_stages_send_nothing_is_refused(canary, tmp_path):
    path = tmp_path / "idle.yaml"
    path.write_text(yaml.safe_dump({"name": "idle", "journeys": {"agent": 1},
                                    "stages": [{"name": "s", "users": 0, "spawn_rate": 1, "duration_s": 5}]}))
    assert "every stage has 0 users" in _refused(canary, scenarios=(str(path),))


@pytest.mark.parametrize("name", ["../scenarios/smoke", "/etc/hostname", "smoke.yaml", "sub/smoke", "..", "smoke\n"])
def test_names_from_a_form_or_run_conf_are_files_of_the_scenarios_folder_only(canary, tmp_path, name):
    text = _refused(canary, scenarios=(name,), scenario_paths=False)
    assert text.startswith("scenario: ") and ("paths are accepted from the command line only" in text
                                              or "no scenario named" in text)


def test_a_path_is_accepted_where_paths_are_allowed(canary, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({"name": "mine", "journeys": {"agent": 1},
                                    "stages": [{"name": "s", "users": 1, "spawn_rate": 1, "duration_s": 5}]}))
    plan = preflight(RunRequest(scenarios=(str(path),), target=canary.base_url, run_id="path-ok", workers=0))
    teardown_workers(plan)
    with pytest.raises(Refusal, match="paths are accepted from the command line only"):
        preflight(RunRequest(scenarios=(str(path),), target=canary.base_url, run_id="path-no", workers=0,
                             scenario_paths=False))


def test_preflight_issues_the_tag_and_teardown_ends_it_and_gives_the_lease_back(canary):
    plan = preflight(RunRequest(scenarios=("smoke",), target=canary.base_url.replace("127.0.0.1", "localhost"),
                                run_id="issued-1", dag_id="loadtest_manual", workers=0))
    assert plan.run_tag == run_tag_for("issued-1", "loadtest_manual") and plan.run_tag in tags.issued(ended=False)
    assert plan.target.startswith("http://localhost:") and plan.target_addresses
    assert lease.holder(canary.base_url)["run_id"] == "issued-1"  # 127.0.0.1 and localhost: one lease
    teardown_workers(plan)
    assert plan.run_tag in tags.issued(ended=True) and lease.holder(canary.base_url) is None


def test_a_refusal_after_the_lease_was_taken_gives_it_back(canary):
    canary.health_status = 503
    with pytest.raises(Refusal, match="is not healthy"):
        preflight(RunRequest(scenarios=("smoke",), target=canary.base_url, run_id="unhealthy", workers=0))
    assert lease.holder(canary.base_url) is None
    assert run_tag_for("unhealthy") not in tags.issued()
