"""
### loadtest_reaper

Every hour: the safety net behind each run's own cleanup.

1. Deletes every `LT-`-tagged entity older than `older_than_s` (default 6 h) from
   each environment that allows load and lists base URLs (plus `reaper_targets`),
   never from production, and never the data of a run that holds a target lease now.
2. Terminates load-test workers past their time-to-live (when the worker provider
   offers `reap_expired_workers`).

The task fails when stale data could not be removed, so the failure reaches Slack.
Trigger by hand with e.g. `{"older_than_s": 0, "reaper_targets": ["http://127.0.0.1:8000/v1"]}`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from stampede.surfaces.airflow_tasks import reap
from stampede.surfaces.dag_defaults import dag_defaults

DEFAULT_AGE_S = 6 * 3600


@dag(
    dag_id="loadtest_reaper",
    schedule="@hourly",
    doc_md=__doc__,
    tags=["stampede", "loadtest", "reaper"],
    **dag_defaults(),
    params={
        "older_than_s": Param(DEFAULT_AGE_S, type="integer", minimum=0, description="Age past which tagged data is stale (s)."),
        "reaper_targets": Param([], type="array", description="Extra target base URLs (incl. /v1) to reap."),
        "slack_channel": Param(None, type=["null", "string"], title="Slack channel", description="This run's Slack channel (#name or ID); empty: the Slack connection's channel extra."),
    },
)
def loadtest_reaper():
    reap()


loadtest_reaper()
