"""
### loadtest_nightly

Every night: normal (1,000 users) → peak (5,000) → stress (ramp to 20,000) against
**staging**, with local workers, then validation, report, test-data cleanup,
worker teardown and a Slack summary. The run fails when a threshold is breached,
the load generator saturated, or test data was left behind.

Unpausing it starts no run: the first is at the next 02:00 UTC. Trigger by hand
with a run conf (or the form) to change what runs, e.g. the demo:
`{"scenarios": ["demo"], "environment": "local", "target": "http://127.0.0.1:8000/v1"}`.
"""

from __future__ import annotations


from airflow.sdk import dag

from stampede.surfaces.airflow_tasks import wire_pipeline
from stampede.surfaces.dag_defaults import (dag_defaults, on_schedule, override_params, scenarios_param,
                                             slack_params, target_params, worker_params)

NIGHTLY_SCENARIOS = ["normal", "peak", "stress"]


@dag(
    dag_id="loadtest_nightly",
    schedule=on_schedule("0 2 * * *"),
    doc_md=__doc__,
    tags=["stampede", "loadtest", "nightly"],
    **dag_defaults(),
    params={
        "scenarios": scenarios_param(NIGHTLY_SCENARIOS),
        **target_params("staging"),
        **override_params(),
        **worker_params(),
        **slack_params(),
    },
)
def loadtest_nightly():
    wire_pipeline(NIGHTLY_SCENARIOS)


loadtest_nightly()
