"""What every Stampede DAG shares: owner, failure alerts, no catch-up, one run at a time, time limits, the trigger form's fields.

Kept apart from ``airflow_tasks`` so that DAG files which define no pipeline
tasks (the reaper) import as little as possible at parse time.

Time limits: ``dagrun_timeout`` (:data:`stampede.surfaces.timeouts.DAGRUN_TIMEOUT`) ends a run that hangs,
so ``max_active_runs=1`` cannot hold every later run forever (the DAG's failure callback tells Slack); the
deadline alert tells Slack when a run is still going 30 minutes past the average of the DAG's last 10
successful runs (from 3 such runs on; before that there is no deadline). The triggerer awaits the alert,
so its callback is importable from the installed package, never from a DAG file.

The trigger form (Airflow 3.3's UI) works with its defaults: a field the run may
leave empty is ``type: ["null", ...]`` with a ``None`` default, because the UI
counts a required field holding ``""`` or null as missing and disables the
Trigger button; a choice among known names is an ``enum`` (a dropdown), or for
a list an ``array`` with ``examples`` (a multi-select) and ``items.enum`` (the
same names checked by the API server). The names come from the shipped (or
``$STAMPEDE_ENVIRONMENTS_FILE``) files, read at parse time: two small local
files, no network, no Variable.

Scheduled DAGs never run when they are first unpaused: a ``CronTriggerTimetable``
with no start date and ``run_immediately=timedelta(0)`` waits for its next tick
(with a start date, or ``run_immediately`` left at False, Airflow 3.3 runs the
latest past tick at once: a red run against the default environment before the
user's own).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import AsyncCallback, CronTriggerTimetable, DeadlineAlert, DeadlineReference, Param

from stampede.plan.environments import load_environments
from stampede.plan.scenario import available_scenarios, load_scenario
from stampede.surfaces.airflow_compat import allow_deadlines_under_dag_test
from stampede.surfaces.callbacks import StampedeAlertNotifier, failure_alert
from stampede.surfaces.timeouts import DAGRUN_TIMEOUT

allow_deadlines_under_dag_test()  # else a passing dag.test() run crashes on the deadline (see airflow_compat)

LATE_AFTER_AVERAGE = timedelta(minutes=30)

MAX_USERS = 20_000
MAX_DURATION_S = 86_400
MAX_WORKERS = 64
PROVIDERS = {"local": "Local processes", "ecs": "ECS Fargate tasks", "ec2": "EC2 instances"}


def dag_defaults() -> dict[str, Any]:
    """Keyword arguments for ``@dag``: spread them, then add the DAG's own id, schedule and params."""
    return {
        "catchup": False,
        "max_active_runs": 1,
        "dagrun_timeout": DAGRUN_TIMEOUT,
        "deadline": DeadlineAlert(
            reference=DeadlineReference.AVERAGE_RUNTIME(max_runs=10, min_runs=3),
            interval=LATE_AFTER_AVERAGE,
            callback=AsyncCallback(StampedeAlertNotifier),
        ),
        "on_failure_callback": failure_alert,
        "default_args": {
            "owner": "platform-sre",
            "retries": 0,
            "retry_delay": timedelta(seconds=30),
            "on_failure_callback": failure_alert,
        },
    }


def on_schedule(cron: str) -> CronTriggerTimetable:
    """``cron`` in UTC, from the next tick on: unpausing the DAG starts no run."""
    return CronTriggerTimetable(cron, timezone="UTC", run_immediately=timedelta(0))


# -- the trigger form ----------------------------------------------------------------------------
def scenario_names(*, searching: bool = False) -> list[str]:
    """The shipped scenarios (``searching``: only those with a ``search`` block, for the breaking point)."""
    names = available_scenarios()
    return [n for n in names if load_scenario(n).search is not None] if searching else names


def environment_names() -> list[str]:
    """The environments that allow load (production never appears in a form)."""
    return [name for name, env in load_environments().items() if env.allow_load]


def scenario_param(default: str, names: list[str]) -> Param:
    return Param(default, type="string", enum=names, title="Scenario", section="Load",
                 description="A file in loadtests/scenarios/.")


def scenarios_param(default: list[str]) -> Param:
    names = scenario_names()
    return Param(default, type="array", examples=names, items={"type": "string", "enum": names}, minItems=1,
                 title="Scenarios", section="Load", description="One or more, played in the order given.")


def target_params(default_environment: str) -> dict[str, Param]:
    environments = environment_names()
    if default_environment not in environments:
        default_environment = environments[0]
    return {
        "environment": Param(default_environment, type="string", enum=environments, title="Environment",
                             section="Target", description="The environment whose target receives the load."),
        "target": Param(None, type=["null", "string"], title="Target base URL", section="Target",
                        description="Incl. /v1. Empty: the environment's first base URL."),
    }


def override_params() -> dict[str, Param]:
    return {
        "users": Param(None, type=["null", "integer"], minimum=1, maximum=MAX_USERS, title="Peak users",
                       section="Load", description="Empty: the scenario's own; else every stage scaled to it."),
        "duration_s": Param(None, type=["null", "integer"], minimum=10, maximum=MAX_DURATION_S,
                            title="Total duration (s)", section="Load",
                            description="Empty: the scenario's own; else the stages scaled to it."),
    }


def worker_params(*, cloud: bool = True) -> dict[str, Param]:
    params = {
        "workers": Param(None, type=["null", "integer"], minimum=0, maximum=MAX_WORKERS, title="Workers",
                         section="Workers", description="Empty: from the peak users. 0: one process, no workers."),
        "local_ips": Param(None, type=["null", "string"], maxLength=2000, title="Source addresses (local workers)",
                           section="Workers",
                           description="Addresses of the Airflow worker the load's connections come from, in turn, "
                                       "e.g. 127.0.0.1-127.0.0.2: each adds the kernel's ephemeral ports (28,232). "
                                       "Empty: as many 127.0.0.x as a loopback target's users need."),
    }
    if cloud:
        params |= {
            "worker_provider": Param("local", type="string", enum=list(PROVIDERS), values_display=PROVIDERS,
                                     title="Worker provider", section="Workers",
                                     description="Where the load generators run; cloud workers are costed first."),
            "worker_spot": Param(False, type="boolean", title="Spot workers", section="Workers",
                                 description="FARGATE_SPOT / EC2 spot capacity."),
        }
    return params


def slack_params() -> dict[str, Param]:
    return {
        "slack_channel": Param(None, type=["null", "string"], title="Slack channel", section="Slack",
                               description="This run's Slack channel (#name or ID); empty: the Slack connection's "
                                           "channel extra."),
    }
