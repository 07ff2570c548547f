"""Airflow fixtures: a migrated SQLite metadata DB in this session's own AIRFLOW_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    completed = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    return home


@pytest.fixture(scope="session")
def dag_bag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


SLACK_TOKEN = "xoxb-e2e-secret-token"


@pytest.fixture
def slack(monkeypatch):
    """A Slack stand-in, reached through the Airflow connection slack_api_default (as in production)."""
    from stampede.infra.slack_standin import SlackStandin

    with SlackStandin(token=SLACK_TOKEN) as standin:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_API_DEFAULT", json.dumps({
            "conn_type": "slack", "password": SLACK_TOKEN,
            "extra": {"base_url": standin.base_url, "channel": "#loadtests"},
        }))
        yield standin


@pytest.fixture
def demo_target(tmp_path):
    from stampede.infra.demo_target.server import DemoTarget

    with DemoTarget(workdir=tmp_path / "target") as target:
        yield target



@pytest.fixture(autouse=True)
def _dag_params_restored(request):
    """``dag.test(run_conf=...)`` leaves the run's conf in the shared DAG's params (Airflow 3.3): restore them,
    or one test's conf (a worker provider, a Slack channel) leaks into the next test's run."""
    if "dag_bag" not in request.fixturenames:
        yield
        return
    import copy

    bag = request.getfixturevalue("dag_bag")
    saved = {dag_id: (copy.deepcopy(dag.params), {t.task_id: copy.deepcopy(t.params) for t in dag.tasks})
             for dag_id, dag in bag.dags.items()}
    yield
    for dag_id, (params, tasks) in saved.items():
        dag = bag.dags[dag_id]
        dag.params = params
        for task in dag.tasks:
            task.params = tasks[task.task_id]
