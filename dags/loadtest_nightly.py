"""
### loadtest_nightly

Every night: normal (1,000 users) → peak (5,000) → stress (ramp to 20,000) against
**staging**, with local workers, then validation, report, test-data cleanup,
worker teardown and a Slack summary. The run fails when a threshold is breached,
the load generator saturated, or test data was left behind.

Trigger by hand with a run conf to change what runs, e.g. the demo:
`{"scenarios": ["demo"], "environment": "local", "target": "http://127.0.0.1:8000/v1"}`.
"""

from __future__ import annotations


from airflow.sdk import Param, dag

from stampede.surfaces.airflow_tasks import wire_pipeline
from stampede.surfaces.dag_defaults import dag_defaults

NIGHTLY_SCENARIOS = ["normal", "peak", "stress"]


@dag(
    dag_id="loadtest_nightly",
    schedule="0 2 * * *",
    doc_md=__doc__,
    tags=["stampede", "loadtest", "nightly"],
    **dag_defaults(),
    params={
        "scenarios": Param(NIGHTLY_SCENARIOS, type="array", description="Scenarios to chain, in order."),
        "environment": Param("staging", type="string", description="Environment whose target receives the load."),
        "target": Param("", type="string", description="Base URL incl. /v1; empty: the environment's first base URL."),
        "workers": Param(None, type=["null", "integer"], minimum=0, maximum=64, description="Local worker processes."),
        "users": Param(None, type=["null", "integer"], minimum=1, maximum=20000),
        "duration_s": Param(None, type=["null", "integer"], minimum=10, maximum=86400),
        "worker_provider": Param("local", type="string", enum=["local", "ecs", "ec2"], title="Worker provider",
                                 description="local processes (default), ECS Fargate tasks or EC2 instances."),
        "worker_spot": Param(False, type="boolean", title="Spot workers", description="FARGATE_SPOT / EC2 spot."),
        "slack_channel": Param(None, type=["null", "string"], title="Slack channel", description="This run's Slack channel (#name or ID); empty: the Slack connection's channel extra."),
    },
)
def loadtest_nightly():
    wire_pipeline(NIGHTLY_SCENARIOS)


loadtest_nightly()
