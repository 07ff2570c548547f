"""Airflow fixtures: a migrated SQLite metadata DB in this session's own AIRFLOW_HOME."""

from __future__ import annotations

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


# -- AWS (cloud workers): moto's server on a free loopback port, the workers stack deployed once ----------
@pytest.fixture(scope="session")
def moto_server():
    from infra.moto_standin import MotoStandin

    with MotoStandin() as server:
        server.reset()
        server.stack_env = server.deploy_workers_stack()
        yield server


@pytest.fixture
def aws(moto_server, monkeypatch):
    for name, value in (moto_server.env() | moto_server.stack_env).items():
        monkeypatch.setenv(name, value)
    moto_server.keep_tasks_running()
    return moto_server
