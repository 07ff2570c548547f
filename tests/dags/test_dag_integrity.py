"""Every DAG file imports cleanly, follows the conventions, and wires the pipeline as designed."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

DAG_FILES = sorted(p.name for p in (Path(__file__).resolve().parents[2] / "dags").glob("*.py"))
PIPELINE_DAGS = ["loadtest_nightly", "loadtest_manual"]


def test_dag_files_import_without_errors(dag_bag):
    assert dag_bag.import_errors == {}
    assert len(dag_bag.dags) >= len(PIPELINE_DAGS)


@pytest.mark.parametrize("file_name", DAG_FILES)
def test_each_file_defines_a_dag_named_after_it(dag_bag, file_name):
    dag = dag_bag.dags.get(file_name.removesuffix(".py"))
    assert dag is not None, f"{file_name} must define the DAG {file_name.removesuffix('.py')}"


@pytest.mark.parametrize("dag_id", [*PIPELINE_DAGS, "loadtest_reaper"])
def test_conventions(dag_bag, dag_id):
    dag = dag_bag.dags.get(dag_id)
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert "stampede" in dag.tags
    assert dag.doc_md and dag_id in dag.doc_md
    for task in dag.tasks:
        assert task.owner == "platform-sre"
        assert task.on_failure_callback, f"{task.task_id} has no failure alert"


@pytest.mark.parametrize("dag_id", PIPELINE_DAGS)
def test_pipeline_wiring(dag_bag, dag_id):
    dag = dag_bag.dags.get(dag_id)
    downstream = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert downstream == {
        "preflight": sorted([
            "lease_held", "cost_check", "provision_workers", "run_stages", "validate", "analyse",
            "cleanup_test_data", "teardown_workers", "report", "notify_summary", "final_verdict",
        ]),
        "lease_held": ["cost_check", "teardown_workers"],  # the setup that makes the teardown give the lease back
        "cost_check": ["provision_workers"],
        "provision_workers": ["cleanup_test_data", "run_stages", "teardown_workers"],
        "run_stages": ["validate"],
        "validate": ["analyse"],
        "analyse": ["cleanup_test_data"],
        "cleanup_test_data": ["teardown_workers"],
        "teardown_workers": ["final_verdict", "report"],  # the report once, after them; the verdict sees the teardown
        "report": ["notify_summary"],
        "notify_summary": ["final_verdict"],
        "final_verdict": [],
    }
    assert dag.get_task("provision_workers").is_setup and dag.get_task("lease_held").is_setup
    assert dag.get_task("cleanup_test_data").is_teardown
    assert dag.get_task("teardown_workers").is_teardown
    assert dag.get_task("run_stages").retries == 2  # a retry takes the running load over, never sends it again
    assert dag.get_task("run_stages").retry_delay == timedelta(0)  # a waiting retry spends the owner's grace
    assert dag.get_task("report").trigger_rule == "all_done"
    assert dag.get_task("notify_summary").trigger_rule == "all_done"
    assert dag.get_task("final_verdict").trigger_rule == "all_done"


def test_manual_form_offers_every_scenario_and_bounds_overrides(dag_bag):
    from stampede.plan.scenario import available_scenarios

    params = dag_bag.dags.get("loadtest_manual").params
    assert params.get_param("scenario").schema["enum"] == available_scenarios()
    assert "production" not in params.get_param("environment").schema["enum"]
    assert params.get_param("users").schema["maximum"] == 20000
    assert params.get_param("duration_s").schema["minimum"] == 10


# -- Slack and Airflow like a native provider (issue 17) ------------------------------------------------------
LOAD_TEST_DAGS = [*PIPELINE_DAGS, "loadtest_breaking_point"]


@pytest.mark.parametrize("dag_id", [*LOAD_TEST_DAGS, "loadtest_reaper", "example_release_gate"])
def test_every_task_has_an_execution_timeout_and_every_run_a_time_limit_and_a_deadline(dag_bag, dag_id):
    from stampede.surfaces.callbacks import StampedeAlertNotifier, failure_alert
    from stampede.surfaces.timeouts import AFTER_LOAD, CEILINGS, DAGRUN_TIMEOUT, LOAD_TASKS

    dag = dag_bag.dags[dag_id]
    assert dag.dagrun_timeout == DAGRUN_TIMEOUT
    (deadline,) = dag.deadline
    assert type(deadline.reference).__name__ == "AverageRuntimeDeadline"
    assert deadline.callback.path == "stampede.surfaces.callbacks.StampedeAlertNotifier"
    assert failure_alert in dag.on_failure_callback if isinstance(dag.on_failure_callback, list) \
        else dag.on_failure_callback is failure_alert
    for task in dag.tasks:
        assert task.execution_timeout is not None, f"{dag_id}.{task.task_id} has no execution_timeout"
        if task.task_id in CEILINGS:
            assert task.execution_timeout == CEILINGS[task.task_id]
        if task.task_id in AFTER_LOAD or task.task_id in LOAD_TASKS:
            assert task._pre_execute_hook is not None, f"{task.task_id}: its timeout is not tightened from the plan"
        assert any(isinstance(c, StampedeAlertNotifier) for c in task.on_failure_callback)


@pytest.mark.parametrize("dag_id", [*LOAD_TEST_DAGS, "loadtest_reaper"])
def test_the_slack_channel_is_a_parameter_defaulting_to_the_connection(dag_bag, dag_id):
    param = dag_bag.dags[dag_id].params.get_param("slack_channel")

    assert param.value is None  # empty: the connection's channel extra
    assert param.schema["type"] == ["null", "string"]  # an empty field does not disable the Trigger button


@pytest.mark.parametrize("dag_id", LOAD_TEST_DAGS)
def test_the_report_task_publishes_the_results_asset(dag_bag, dag_id):
    from stampede.surfaces.assets import RESULTS_ALIAS

    assert RESULTS_ALIAS in dag_bag.dags[dag_id].get_task("report").outlets


def test_the_example_release_gate_is_scheduled_on_the_results(dag_bag):
    from stampede.surfaces.assets import RESULTS_ALIAS

    dag = dag_bag.dags["example_release_gate"]
    assert dag.timetable.asset_condition == RESULTS_ALIAS or RESULTS_ALIAS in getattr(
        dag.timetable.asset_condition, "objects", [])
    assert [t.task_id for t in dag.tasks] == ["gate"]
    assert dag.doc_md and "example_release_gate" in dag.doc_md and "stampede" in dag.tags
