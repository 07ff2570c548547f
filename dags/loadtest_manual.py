"""
### loadtest_manual

Run one scenario on demand from the Airflow UI ("Trigger DAG" shows this form):
pick the scenario and the environment, and optionally scale the peak users and the
total duration. Same safety checks, cleanup and Slack summary as the nightly run.
"""

from __future__ import annotations


from airflow.sdk import Param, dag

from stampede.surfaces.airflow_tasks import wire_pipeline
from stampede.plan.environments import load_environments
from stampede.surfaces.dag_defaults import dag_defaults
from stampede.plan.scenario import available_scenarios

# Reading two small local files at parse time is cheap; no network, no Variables.
SCENARIOS = available_scenarios()
ENVIRONMENTS = [name for name, env in load_environments().items() if env.allow_load]


@dag(
    dag_id="loadtest_manual",
    schedule=None,
    doc_md=__doc__,
    tags=["stampede", "loadtest", "manual"],
    **dag_defaults(),
    params={
        "scenario": Param("smoke" if "smoke" in SCENARIOS else SCENARIOS[0], type="string", enum=SCENARIOS,
                          title="Scenario", description="A file in loadtests/scenarios/."),
        "environment": Param("local", type="string", enum=ENVIRONMENTS, title="Environment"),
        "target": Param("", type="string", title="Target base URL",
                        description="Incl. /v1. Empty: the environment's first base URL. Loopback for local."),
        "users": Param(None, type=["null", "integer"], minimum=1, maximum=20000, title="Peak users (override)"),
        "duration_s": Param(None, type=["null", "integer"], minimum=10, maximum=86400, title="Total duration in s (override)"),
        "workers": Param(None, type=["null", "integer"], minimum=0, maximum=64, title="Local worker processes"),
        "worker_provider": Param("local", type="string", enum=["local", "ecs", "ec2"], title="Worker provider",
                                 description="local processes (default), ECS Fargate tasks or EC2 instances."),
        "worker_spot": Param(False, type="boolean", title="Spot workers", description="FARGATE_SPOT / EC2 spot."),
        "slack_channel": Param(None, type=["null", "string"], title="Slack channel", description="This run's Slack channel (#name or ID); empty: the Slack connection's channel extra."),
    },
)
def loadtest_manual():
    wire_pipeline([])


loadtest_manual()
