"""The pipeline's steps in order in one process, for the command line and the bench.

Mirrors the DAG's wiring: the cost check before any worker starts; cleanup and
teardown run whatever happened before them (as Airflow's teardown tasks do);
the report is written once, after them; then Slack and the outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from stampede.core.records import RunResult
from stampede.cost.estimate import Budgets
from stampede.plan.run_plan import RunPlan
from stampede.steps import cleanup, cost_actual, cost_check, notify, provision, report, teardown, validate
from stampede.steps import run_stages as run_stages_step
from stampede.steps.analyse import analyse
from stampede.steps.verdict import Outcome, finish_run

log = logging.getLogger(__name__)


def run_pipeline(plan: RunPlan, load: Callable[[], object], *, budgets: Budgets | None = None) -> Outcome:
    """preflight's ``plan`` → cost check → workers → ``load()`` → analyse → cleanup, teardown → report → notify.

    :param load: the load step(s): the staged run and its validation, or the breaking-point search.
    """
    try:
        cost_check.cost_check(plan, budgets=budgets or Budgets.from_env())
    except Exception:
        teardown.release_target(plan)  # nothing started: no teardown will give the lease back
        raise
    notify.notify_start(plan)
    try:
        provision.provision_workers(plan)
        load()
        analyse(plan)
    finally:
        try:
            cleanup.cleanup_test_data(plan)
        finally:
            try:
                teardown.teardown_workers(plan)
                if provision.is_cloud(plan):
                    cost_actual.cost_actual(plan)
            except Exception:  # noqa: BLE001 - teardown.json records it; the outcome is then "left behind"
                log.exception("Teardown of run %s failed: workers may be left", plan.run_id)
            report.report(plan)
            notify.notify_summary(plan)
    return finish_run(plan)


def run_load(plan: RunPlan, *, stop_probe=None) -> RunResult:
    """Workers, stages and validation in this process (the bench, tests); the workers go whatever happens."""
    from stampede.core.stops import never

    try:
        provision.provision_workers(plan)
        run_stages_step.run_stages(plan, stop_probe=stop_probe or never)
        return validate.validate(plan)
    finally:
        teardown.teardown_workers(plan)
