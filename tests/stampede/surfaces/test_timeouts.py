"""Task timeouts derived from the plan: the numbers, the ceilings, and what on_kill does for the load task."""

from __future__ import annotations

import sys
from datetime import timedelta
from types import SimpleNamespace

import pytest

from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import Scenario, Search, Stage
from stampede.surfaces import timeouts
from stampede.surfaces.timeouts import CEILINGS, DAGRUN_TIMEOUT, LoadKilled, from_plan, planned_timeout


def plan_of(*stages: Stage, workers: int = 0, search: Search | None = None) -> RunPlan:
    scenario = Scenario(name="s", journeys={"agent": 1.0}, think_time_s=(1, 2), stages=stages, search=search)
    return RunPlan(run_id="r", target="http://127.0.0.1:1/v1", environment="local", scenarios=(scenario,),
                   workers=workers)


def test_the_load_step_gets_its_own_limit_plus_a_margin() -> None:
    smoke = plan_of(Stage("smoke", 5, 5, 12))
    with_workers = plan_of(Stage("smoke", 5, 5, 12), workers=2)

    assert planned_timeout("run_stages", smoke) == timedelta(seconds=round((12 + 90) * 1.1 + 600))
    assert planned_timeout("run_stages", with_workers) == timedelta(seconds=round((12 + 90 + 60) * 1.1 + 600))
    assert planned_timeout("validate", smoke) == timedelta(seconds=round(600 + 0.1 * 102))
    assert planned_timeout("final_verdict", smoke) == timedelta(minutes=5)


def test_a_breaking_point_search_gets_every_level_and_its_refinements() -> None:
    search = Search(start=100, maximum=800, step_duration_s=60, refine_steps=3, step_factor=2)
    plan = plan_of(Stage("step", 100, 10, 60), search=search)

    levels = 4 + 3  # 100, 200, 400, 800, then three bisections
    assert planned_timeout("search_breaking_point", plan) == timedelta(seconds=round(levels * (60 + 90) * 1.1 + 600))


def test_the_longest_run_a_form_allows_fits_under_every_ceiling_and_the_dagrun_timeout() -> None:
    day = plan_of(Stage("endurance", 1000, 10, 86_400), workers=4)

    for task_id in CEILINGS:
        assert planned_timeout(task_id, day) <= CEILINGS[task_id]
    assert planned_timeout("run_stages", day) < DAGRUN_TIMEOUT
    assert CEILINGS["run_stages"] == planned_timeout("run_stages", day)  # the ceiling is that run's own limit


def test_the_hook_sets_the_timeout_from_the_rendered_plan_and_arms_on_kill() -> None:
    task = SimpleNamespace(op_args=[plan_of(Stage("smoke", 5, 5, 12)).to_dict()], execution_timeout=CEILINGS["run_stages"],
                           on_kill=lambda: None)

    from_plan("run_stages")({"task": task})

    assert task.execution_timeout == timedelta(seconds=712)
    assert task.on_kill is timeouts._stop_load


def test_on_kill_stops_the_load_on_sigterm_and_only_logs_after_a_timeout() -> None:
    from airflow.sdk.exceptions import AirflowTaskTimeout

    with pytest.raises(LoadKilled, match="the load was stopped"):
        timeouts._stop_load()  # SIGTERM: nothing is unwinding yet, so on_kill makes the load step unwind
    try:
        raise AirflowTaskTimeout("Timeout, PID: 1")
    except AirflowTaskTimeout:
        assert sys.exc_info()[0] is AirflowTaskTimeout
        timeouts._stop_load()  # the runner calls on_kill while the timeout unwinds: the load has stopped already


def test_a_task_without_a_plan_keeps_its_ceiling() -> None:
    task = SimpleNamespace(op_args=[None], execution_timeout=CEILINGS["report"])

    from_plan("report")({"task": task})

    assert task.execution_timeout == CEILINGS["report"]
