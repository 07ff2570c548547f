"""
### loadtest_manual

Run one scenario on demand from the Airflow UI ("Trigger DAG" shows this form):
pick the scenario and the environment, and optionally scale the peak users and the
total duration. Same safety checks, cleanup and Slack summary as the nightly run.
With its defaults (`smoke`, environment `local`, no target) it loads the local
environment's first base URL: the demo target that `make airflow` starts.
"""

from __future__ import annotations


from airflow.sdk import dag

from stampede.surfaces.airflow_tasks import wire_pipeline
from stampede.surfaces.dag_defaults import (dag_defaults, override_params, scenario_names, scenario_param,
                                             slack_params, target_params, worker_params)

SCENARIOS = scenario_names()


@dag(
    dag_id="loadtest_manual",
    schedule=None,
    doc_md=__doc__,
    tags=["stampede", "loadtest", "manual"],
    **dag_defaults(),
    params={
        "scenario": scenario_param("smoke" if "smoke" in SCENARIOS else SCENARIOS[0], SCENARIOS),
        **target_params("local"),
        **override_params(),
        **worker_params(),
        **slack_params(),
    },
)
def loadtest_manual():
    wire_pipeline([])


loadtest_manual()
