"""Task timeouts from the planned load: a generous ceiling at parse time, the plan's own limit at run time.

The plan (users, stages, durations) is known only when preflight has run, but Airflow reads
``execution_timeout`` when a task starts. So every task gets two things:

- at parse time, ``execution_timeout=CEILINGS[task]``: the longest any run the forms allow could need
  (``duration_s`` up to 86,400 s), so a task that hangs before its plan is read still ends;
- a ``pre_execute`` hook (:func:`from_plan`) that reads the task's plan argument and sets the task's
  ``execution_timeout`` to :func:`planned_timeout`: the load step's own wall-clock limit (what
  :mod:`stampede.load.runner` allows the Locust master: the planned load, 90 s of grace, 60 s for workers to
  register) plus 10 % and 10 minutes; the steps after the load get a fixed time plus a share of the load's
  length (their work grows with the series and the entities created).

Measured under Airflow 3.3.2 (``dag.test()``): a ``pre_execute`` hook runs after the task's arguments are
rendered (the plan is there) and before ``execution_timeout`` is read, so the task ran with the hook's 2 s
instead of its parse-time 1 h, then raised ``AirflowTaskTimeout`` and called ``on_kill``.

The load tasks also get an ``on_kill`` (:func:`_stop_load`): Airflow calls it on SIGTERM ("mark failed",
a dagrun timeout, a stopping worker) and *returns*, which would leave the load running; ours raises, so the
load step unwinds through its own ``finally``, which stops the Locust master's process group. On an
``execution_timeout`` the load has already unwound (the timeout is raised inside it) and on_kill only logs.

``DAGRUN_TIMEOUT`` bounds a whole run: the longest load a form allows plus four hours for everything else.
A nightly that is merely slow is reported well before that by the DAG's deadline alert
(:mod:`stampede.surfaces.dag_defaults`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from stampede.load.runner import EXPECT_WORKERS_WAIT_S, GRACE_S
from stampede.plan.run_plan import RunPlan

log = logging.getLogger(__name__)

MAX_LOAD_S = 86_400  # the longest duration a form allows (loadtest_manual's duration_s)
LOAD_TASKS = frozenset({"run_stages", "search_breaking_point"})
LOAD_MARGIN = 0.10
LOAD_MARGIN_S = 600.0

# task -> (fixed seconds, share of the planned load): the time the task may take once the plan is known
AFTER_LOAD: dict[str, tuple[float, float]] = {
    "lease_held": (120, 0.0),
    "cost_check": (300, 0.0),
    "provision_workers": (1800, 0.0),
    "validate": (600, 0.10),
    "analyse": (600, 0.10),
    "cleanup_test_data": (900, 0.10),
    "teardown_workers": (1200, 0.0),
    "report": (600, 0.05),
    "notify_summary": (600, 0.0),
    "final_verdict": (300, 0.0),
}
CEILINGS: dict[str, timedelta] = {
    "preflight": timedelta(minutes=10),  # makes the plan: its own time is fixed
    "reap": timedelta(minutes=45),
    **{task: timedelta(seconds=fixed + share * (MAX_LOAD_S + GRACE_S + EXPECT_WORKERS_WAIT_S))
       for task, (fixed, share) in AFTER_LOAD.items()},
    **{task: timedelta(seconds=(MAX_LOAD_S + GRACE_S + EXPECT_WORKERS_WAIT_S) * (1 + LOAD_MARGIN) + LOAD_MARGIN_S)
       for task in LOAD_TASKS},
}
DAGRUN_TIMEOUT = timedelta(seconds=MAX_LOAD_S) + timedelta(hours=4)


class LoadKilled(RuntimeError):
    """Airflow asked the load task to stop (SIGTERM): raised so the load step stops its load."""


def planned_load_s(plan: RunPlan) -> float:
    """The load step's own wall-clock limit for this plan (per level, for a breaking-point search)."""
    per_master = GRACE_S + (EXPECT_WORKERS_WAIT_S if plan.workers else 0)
    search = plan.scenarios[0].search
    if search is not None:
        from stampede.analysis.breaking_point import plan_levels  # numpy: not at DAG parse time (0.5 s)

        levels = len(plan_levels(search)) + search.refine_steps
        return levels * (search.step_duration_s + per_master)
    return plan.load_duration_s + per_master


def planned_timeout(task_id: str, plan: RunPlan) -> timedelta:
    """How long ``task_id`` may run for ``plan`` (never more than its parse-time ceiling)."""
    load = planned_load_s(plan)
    if task_id in LOAD_TASKS:
        seconds = load * (1 + LOAD_MARGIN) + LOAD_MARGIN_S
    elif task_id in AFTER_LOAD:
        fixed, share = AFTER_LOAD[task_id]
        seconds = fixed + share * load
    else:
        return CEILINGS.get(task_id, DAGRUN_TIMEOUT)
    return min(timedelta(seconds=round(seconds)), CEILINGS[task_id])


def _plan_argument(task: Any) -> RunPlan | None:
    """The task's plan: its first argument, rendered from preflight's XCom by now (``None``: no plan)."""
    args = list(getattr(task, "op_args", None) or [])
    data = args[0] if args else (getattr(task, "op_kwargs", None) or {}).get("plan")
    return RunPlan.from_dict(data) if isinstance(data, dict) else None


def _stop_load() -> None:
    """``on_kill`` of a load task: raise while the load runs, so its ``finally`` stops the Locust master."""
    from airflow.sdk.exceptions import AirflowTaskTimeout

    if isinstance(sys.exc_info()[1], AirflowTaskTimeout):  # the timeout already unwound the load step
        log.warning("execution_timeout: the load step has stopped its load")
        return
    log.warning("Airflow is stopping the load task (SIGTERM): stopping the load")
    raise LoadKilled("the load task was stopped by Airflow (marked failed, timed out or its worker stopped); "
                     "the load was stopped")


def from_plan(task_id: str) -> Callable[[dict[str, Any]], None]:
    """A ``pre_execute`` hook: this task's ``execution_timeout`` from its plan (and ``on_kill`` for the load)."""

    def apply(context: dict[str, Any]) -> None:
        task = context["task"]
        plan = _plan_argument(task)
        if plan is not None:
            task.execution_timeout = planned_timeout(task_id, plan)
            log.info("execution_timeout of %s from the plan: %s", task_id, task.execution_timeout)
        if task_id in LOAD_TASKS:
            task.on_kill = _stop_load

    apply.__name__ = f"timeout_from_plan_{task_id}"
    return apply


def task_timeouts(task_id: str) -> dict[str, Any]:
    """The ``@task`` keywords of ``task_id``: its ceiling and, when it takes a plan, the hook that tightens it."""
    kwargs: dict[str, Any] = {"execution_timeout": CEILINGS[task_id]}
    if task_id in AFTER_LOAD or task_id in LOAD_TASKS:
        kwargs["pre_execute"] = from_plan(task_id)
    return kwargs
