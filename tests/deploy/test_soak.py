"""The soak, shortened (``make soak`` runs it for ~20 minutes): one run on a real CeleryExecutor deployment
whose Locust master, then task process, then Celery worker are killed mid-load (``stampede.surfaces.soak``).

Every figure checked comes from the target's own request times and the run's own files; the
checks are the soak's (they also decide ``make soak``'s exit code), each asserted by name.
"""

from __future__ import annotations

import json

import pytest

from stampede.infra.databases import postgres_problem
from stampede.surfaces.soak import SoakConfig, redis_problem, soak

pytestmark = pytest.mark.integration

# 2.5 minutes of load: a kill every ~37 s leaves each recovery (a takeover needs Airflow's 5-6 s
# heartbeat timeout, a retry and a new worker) time to finish before the next; ~5 minutes of wall
SHORT = SoakConfig(duration_s=150, users=60, checkpoint_s=2.0)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    for problem in (postgres_problem(), redis_problem()):
        if problem:
            pytest.skip(f"the soak needs PostgreSQL and Redis: {problem}")
    measured = soak(SHORT, tmp_path_factory.mktemp("soak"))
    print(json.dumps(measured, indent=2))
    return measured


@pytest.mark.parametrize("check", ["dag_run_succeeded", "run_went_on", "master_restarted_once",
                                   "lost_at_most_a_checkpoint_and_a_report", "takeovers_by_retries", "takeovers_within_bound",
                                   "every_stage_judged", "every_counted_second_in_results", "no_load_unowned",
                                   "memory_flat"])
def test_the_soak_survives_its_crashes(report, check):
    assert report["checks"][check], json.dumps({k: v for k, v in report.items() if k != "memory"}, indent=2)[:4000]
