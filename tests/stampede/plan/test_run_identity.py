"""Run identity: one tag, folder, lease and test data per DAG and run; readable; never shared."""

from __future__ import annotations

import pytest

from stampede.plan.run_plan import RunPlan, run_tag_for
from stampede.plan.scenario import load_scenario
from stampede.steps.folder import folder_of


def _plan(run_id: str, dag_id: str = "") -> RunPlan:
    return RunPlan(run_id=run_id, target="http://127.0.0.1:8000/v1", environment="local",
                   scenarios=(load_scenario("smoke"),), workers=0, dag_id=dag_id, target_addresses=("127.0.0.1",))


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(("run-1", ""), ("run_1", ""), id="punctuation"),
        pytest.param(("run-1", ""), ("run1", ""), id="punctuation-dropped"),
        pytest.param(("manual__2026-12-01T02:00:00+00:00", "loadtest_nightly"),
                     ("manual__2026-12-01T02:00:00+00:00", "loadtest_manual"), id="same-run-id-two-dags"),
        pytest.param(("manual__2026-12-01T02:00:00.123+00:00", "d"), ("manual__2026-12-01T02:00:00.456+00:00", "d"),
                     id="same-second"),
        pytest.param(("x" * 40 + "a", ""), ("x" * 40 + "b", ""), id="long-common-start"),
    ],
)
def test_distinct_runs_never_share_a_tag_or_a_folder(first, second, tmp_path, monkeypatch):
    monkeypatch.setenv("STAMPEDE_REPORTS_DIR", str(tmp_path))
    assert run_tag_for(*first) != run_tag_for(*second)
    assert folder_of(_plan(*first)).path != folder_of(_plan(*second)).path


def test_the_tag_is_readable_keeps_the_whole_year_and_is_letters_and_digits():
    tag = run_tag_for("manual__2026-12-01T20:04:59.123456+00:00", "loadtest_nightly")
    assert tag.startswith("LT-manual20261201T200459x")  # the seed's slug read LT-0261201…: the year lost a digit
    assert tag[3:].isalnum() and len(tag) <= 48
    assert run_tag_for("manual__2026-12-01T20:04:59.123456+00:00", "loadtest_nightly") == tag  # stable


def test_the_plan_carries_its_dag_and_addresses_through_xcom():
    plan = _plan("run-1", "loadtest_manual")
    again = RunPlan.from_dict(plan.to_dict())
    assert again.run_tag == plan.run_tag and again.dag_id == "loadtest_manual"
    assert again.target_addresses == ("127.0.0.1",)
    assert again.locust_plan()["egress"] == {"addresses": ["127.0.0.1:8000"], "names": {}}
