"""The final verdict: a teardown that failed, never finished or left a worker is "left behind", never a pass."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stampede.core.records import CleanupResult, RunResult, write_results
from stampede.core.verdict import Exit
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import load_scenario
from stampede.state import db, tags
from stampede.steps.verdict import RunFailed, final_verdict, outcome_of


@pytest.fixture
def plan(tmp_path, monkeypatch) -> RunPlan:
    monkeypatch.setenv("STAMPEDE_REPORTS_DIR", str(tmp_path / "reports"))
    db.dispose_all()
    plan = RunPlan(run_id="verdict-run", target="http://127.0.0.1:8000/v1", environment="local",
                   scenarios=(load_scenario("smoke"),), workers=1, out_dir=str(tmp_path / "run"),
                   target_addresses=("127.0.0.1",))
    result = RunResult(run_id=plan.run_id, scenario="smoke", target=plan.target, verdict="pass",
                       started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:01:00+00:00", stages=[],
                       cleanup=CleanupResult(created=3, deleted=3, left=0, ok=True))
    write_results(result, tmp_path / "run" / "results.json")
    tags.issue(plan.run_tag, run_id=plan.run_id)
    yield plan
    db.dispose_all()


def _teardown(plan: RunPlan, **summary) -> None:
    (Path(plan.out_dir) / "teardown.json").write_text(json.dumps({"provider": "local", "stopped": 1, **summary}))


def test_a_clean_run_passes_and_ends_its_tag(plan):
    _teardown(plan, left=0)
    assert outcome_of(plan).exit == Exit.PASS
    assert final_verdict(plan)["verdict"] == "pass"
    assert plan.run_tag in tags.issued(ended=True)


@pytest.mark.parametrize(
    ("summary", "problem"),
    [
        pytest.param({"left": 1, "left_handles": ["4242"]}, "workers still running after teardown", id="worker-left"),
        pytest.param({"left": None, "error": "ClientError: throttled"}, "teardown failed (ClientError: throttled)",
                     id="teardown-error"),
        pytest.param(None, "teardown did not finish", id="no-teardown"),
    ],
)
def test_anything_but_a_proved_teardown_is_left_behind(plan, summary, problem):
    if summary is not None:
        _teardown(plan, **summary)
    outcome = outcome_of(plan)
    assert outcome.exit == Exit.LEFT_BEHIND and any(problem in p for p in outcome.problems)
    with pytest.raises(RunFailed, match=r"left behind \(exit 4\)"):
        final_verdict(plan)
    assert plan.run_tag in tags.issued(ended=True)  # the run is over all the same


def test_a_teardown_task_that_did_not_succeed_fails_the_verdict_whatever_its_file_says(plan):
    _teardown(plan, left=0)  # e.g. a stale file, or the task died after writing it
    with pytest.raises(RunFailed, match="the teardown task did not succeed"):
        final_verdict(plan, teardown_finished=False)
