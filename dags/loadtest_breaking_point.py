"""
### loadtest_breaking_point

Find where the target breaks: the scenario's `search` block steps the load up
(users, or the arrival rate in the open model) from `start_users` to `max_users`
(clamped to the environment's user cap), each step a short stage judged on its
steady part, until a threshold breaks or throughput stops growing with the users
(the knee); then it bisects between the last good and the first bad step.
`results.json` gets `breaking_point {users, rps, p95_ms, error_rate, reason}`,
every step's figures (`steps`) and a Universal Scalability Law fit (`capacity`).
The kill switch stops the search between and during steps. A saturated load
generator makes the run invalid: beyond it, the figures measure the generator.

Trigger by hand ("Trigger DAG" shows the form), e.g. against the demo target:
`{"scenario": "breaking_point", "environment": "local", "target": "http://127.0.0.1:8000/v1"}`.
"""

from __future__ import annotations


from airflow.sdk import dag

from stampede.surfaces.airflow_tasks import wire_breaking_point
from stampede.surfaces.dag_defaults import (dag_defaults, scenario_names, scenario_param, slack_params, target_params,
                                             worker_params)

SEARCHES = scenario_names(searching=True)


@dag(
    dag_id="loadtest_breaking_point",
    schedule=None,
    doc_md=__doc__,
    tags=["stampede", "loadtest", "breaking-point"],
    **dag_defaults(),
    params={
        "scenario": scenario_param("breaking_point" if "breaking_point" in SEARCHES else SEARCHES[0], SEARCHES),
        **target_params("staging"),
        **worker_params(cloud=False),
        **slack_params(),
    },
)
def loadtest_breaking_point():
    wire_breaking_point("breaking_point")


loadtest_breaking_point()
