"""The run plan: stages of chained scenarios, which of them are judged, and what Locust receives."""

from __future__ import annotations

import json

from stampede.plan.run_plan import RunPlan, run_tag_for
from stampede.plan.scenario import load_scenario


def _plan(*names: str) -> RunPlan:
    return RunPlan(run_id="manual__2026-11-28T02:00:00+00:00", target="http://127.0.0.1:8000/v1",
                   environment="local", scenarios=tuple(load_scenario(n) for n in names), workers=2)


def test_chained_scenarios_become_one_sequence_with_their_own_thresholds():
    plan = _plan("normal", "peak")
    names = [s.name for s in plan.stages]
    assert names[0].startswith("normal/") and names[-1].startswith("peak/")
    normal_hold = next(s for s in plan.stages if s.name == "normal/hold")
    peak_hold = next(s for s in plan.stages if s.scenario == "peak" and s.users == 5000 and s.judged)
    assert normal_hold.thresholds["p95_ms"] == 200 and peak_hold.thresholds["p95_ms"] == 500
    assert plan.load_duration_s == sum(s.duration_s for s in plan.stages)


def test_ramp_downs_are_not_judged_and_min_rps_applies_only_at_the_peak():
    stages = {s.name: s for s in _plan("normal").stages}
    assert stages["rampdown"].judged is False and stages["rampdown"].thresholds == {}
    assert "min_rps" not in stages["warmup"].thresholds and "p95_ms" in stages["warmup"].thresholds
    assert stages["hold"].thresholds["min_rps"] == 100


def test_stress_records_breaches_instead_of_aborting():
    assert not any(s.abort for s in _plan("stress").stages)


def test_locust_plan_is_json_and_carries_no_password(monkeypatch):
    monkeypatch.setenv("STAMPEDE_TARGET_PASSWORD", "s3cret-pass")
    plan = _plan("smoke")
    text = json.dumps(plan.locust_plan())
    assert "s3cret-pass" not in text
    assert json.loads(text)["run_tag"] == plan.run_tag
    assert RunPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan


def test_run_tag_is_searchable_and_url_safe():
    tag = run_tag_for("manual__2026-11-28T02:00:00.123+00:00")
    assert tag.startswith("LT-") and tag[3:].isalnum()
    assert run_tag_for("a") != run_tag_for("b")
