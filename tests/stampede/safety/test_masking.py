"""Every Airflow task that builds the run plan registers the target password with Airflow's secret masker.

Under ``dag.test()`` the console is filtered by the core masker, not the task
SDK's (see /work/notes/airflow-slack-api.md §5), so the registration is checked
on the SDK masker itself, which is what masks the real task log.
"""

from __future__ import annotations

import pytest

from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import load_scenario

PASSWORD = "Target-Pw-Masked-4711"


@pytest.fixture
def sdk_redact():
    from airflow.sdk._shared.secrets_masker import redact

    return redact


def test_a_task_that_builds_the_plan_masks_the_password(monkeypatch, sdk_redact):
    from stampede.surfaces import airflow_tasks

    monkeypatch.setenv("STAMPEDE_TARGET_PASSWORD", PASSWORD)
    assert PASSWORD in sdk_redact(f"login with {PASSWORD}")  # not registered yet
    plan = RunPlan(run_id="mask", target="http://127.0.0.1:8000/v1", environment="local",
                   scenarios=(load_scenario("smoke"),), workers=0, target_addresses=("127.0.0.1",))
    airflow_tasks._plan(plan.to_dict())
    assert sdk_redact(f"login with {PASSWORD}") == "login with ***"
