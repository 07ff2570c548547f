"""Every DAG's trigger form works with its defaults, offers names instead of free text, and is bounded.

The Trigger button of Airflow 3.3's form is disabled while a required field
holds null or "" (a field is required when its ``type`` does not include
"null"): :func:`missing_in_the_form` is that rule, read from the installed UI
bundle (``isRequired`` and ``recheckSection``). The API server validates a run
conf against the same JSON schemas (``dag.params.validate``).
"""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import pytest

from stampede.plan.scenario import available_scenarios, load_scenario

DAG_IDS = ["loadtest_manual", "loadtest_nightly", "loadtest_breaking_point", "loadtest_reaper"]
SCHEDULED = {"loadtest_nightly": "0 2 * * *", "loadtest_reaper": "0 * * * *"}


def missing_in_the_form(params) -> list[str]:
    missing = []
    for name, param in params.items():
        kind = param.schema.get("type")
        required = bool(kind) and not (isinstance(kind, list) and "null" in kind)
        if required and param.value in (None, ""):
            missing.append(name)
    return missing


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_the_trigger_button_is_enabled_with_the_defaults(dag_bag, dag_id):
    params = dag_bag.dags[dag_id].params
    assert missing_in_the_form(params) == []
    params.validate()  # the API server accepts the defaults as they are


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_every_field_has_a_title_and_a_section(dag_bag, dag_id):
    for name, param in dag_bag.dags[dag_id].params.items():
        assert param.schema.get("title") and param.schema.get("section"), name
        assert param.description or param.schema.get("description_md"), name


@pytest.mark.parametrize("dag_id", ["loadtest_manual", "loadtest_nightly", "loadtest_breaking_point"])
def test_environments_are_a_dropdown_without_production_and_the_target_may_stay_empty(dag_bag, dag_id):
    params = dag_bag.dags[dag_id].params
    environments = params.get_param("environment").schema["enum"]
    assert "production" not in environments and {"local", "staging"} <= set(environments)
    assert params["target"] is None and "null" in params.get_param("target").schema["type"]


def test_the_manual_form_offers_every_scenario_as_a_dropdown(dag_bag):
    params = dag_bag.dags["loadtest_manual"].params
    assert params.get_param("scenario").schema["enum"] == available_scenarios()
    assert (params["scenario"], params["environment"]) == ("smoke", "local")  # goes green against the demo target
    assert params.get_param("worker_provider").schema["enum"] == ["local", "ecs", "ec2"]


def test_the_nightly_form_is_a_multi_select_of_the_scenarios(dag_bag):
    schema = dag_bag.dags["loadtest_nightly"].params.get_param("scenarios").schema
    # the UI shows a multi-select only for an array with a top-level examples (or enum) list
    assert schema["type"] == "array" and schema["examples"] == available_scenarios()
    assert schema["items"]["enum"] == available_scenarios()  # and the API server checks each name


def test_the_breaking_point_form_offers_only_scenarios_with_a_search(dag_bag):
    names = dag_bag.dags["loadtest_breaking_point"].params.get_param("scenario").schema["enum"]
    assert names and "breaking_point" in names and "smoke" not in names
    assert all(load_scenario(n).search is not None for n in names)


@pytest.mark.parametrize(("dag_id", "conf", "why"), [
    ("loadtest_manual", {"users": ""}, "is not of type"),
    ("loadtest_manual", {"users": 0}, "less than the minimum"),
    ("loadtest_manual", {"users": 20_001}, "greater than the maximum"),
    ("loadtest_manual", {"duration_s": 5}, "less than the minimum"),
    ("loadtest_manual", {"scenario": "nope"}, "is not one of"),
    ("loadtest_manual", {"environment": "production"}, "is not one of"),
    ("loadtest_manual", {"worker_provider": "gke"}, "is not one of"),
    ("loadtest_manual", {"workers": 65}, "greater than the maximum"),
    ("loadtest_nightly", {"scenarios": ["smoke", "nope"]}, "is not one of"),
    ("loadtest_nightly", {"scenarios": []}, "should be non-empty"),
    ("loadtest_reaper", {"older_than_s": -1}, "less than the minimum"),
    ("loadtest_reaper", {"reaper_targets": ["ftp://x"]}, "does not match"),
])
def test_a_conf_outside_the_form_is_refused_by_the_api_server(dag_bag, dag_id, conf, why):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dag_bag.dags[dag_id].params)
    with pytest.raises(ParamValidationError, match=why):
        params.update(conf)  # each value is checked as it is set, as the API server does with a run conf
        params.validate()


@pytest.mark.parametrize("dag_id", list(SCHEDULED))
def test_a_freshly_unpaused_scheduled_dag_waits_for_its_next_tick(dag_bag, dag_id, monkeypatch):
    """Right after a tick (the worst case), a DAG with no runs yet is scheduled for the next one, not the last."""
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables import trigger
    from airflow.timetables.base import TimeRestriction

    dag = DagSerialization.from_dict(DagSerialization.to_dict(dag_bag.dags[dag_id]))
    assert dag.start_date is None and dag.catchup is False
    assert dag.timetable.summary == SCHEDULED[dag_id]
    just_after = datetime(2026, 6, 15, 2, 0, 30, tzinfo=timezone.utc)  # 30 s after 02:00 (and after 02:00 hourly)
    monkeypatch.setattr(trigger, "utcnow", lambda: just_after)
    info = dag.timetable.next_dagrun_info(last_automated_data_interval=None,
                                          restriction=TimeRestriction(earliest=None, latest=None, catchup=False))
    assert info.run_after > just_after, f"{dag_id} would run at once on unpause ({info.run_after})"
