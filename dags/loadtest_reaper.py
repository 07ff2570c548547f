"""
### loadtest_reaper

Every hour: the safety net behind each run's own cleanup.

1. Deletes what ended runs left, only for `LT-` run tags Stampede issued whose runs
   ended at least `older_than_s` ago (default 6 h), matched as whole tokens: it resumes
   each such run's unproved cleanup from its ledger, and sweeps each target such a run
   loaded (plus `reaper_targets`) through the cleanup declarations; never production,
   never a pattern alone (`LT-01103` is a postcode).
2. Terminates load-test workers past their time-to-live (when the worker provider
   offers `reap_expired_workers`).

The task fails when what ended runs left could not be removed, so the failure reaches Slack.
Trigger by hand with e.g. `{"older_than_s": 0, "reaper_targets": ["http://127.0.0.1:8000/v1"]}`.
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from stampede.surfaces.airflow_tasks import reap
from stampede.surfaces.dag_defaults import dag_defaults, on_schedule, slack_params

DEFAULT_AGE_S = 6 * 3600


@dag(
    dag_id="loadtest_reaper",
    schedule=on_schedule("0 * * * *"),
    doc_md=__doc__,
    tags=["stampede", "loadtest", "reaper"],
    **dag_defaults(),
    params={
        "older_than_s": Param(DEFAULT_AGE_S, type="integer", minimum=0, maximum=30 * 86400, title="Older than (s)",
                              section="Reaper", description="How long ago a run must have ended for the reaper to clean up after it (s)."),
        "reaper_targets": Param([], type="array", items={"type": "string", "pattern": "^https?://"},
                                title="Extra targets", section="Reaper",
                                description="Base URLs (incl. /v1) to reap besides the environments', one a line."),
        **slack_params(),
    },
)
def loadtest_reaper():
    reap()


loadtest_reaper()
