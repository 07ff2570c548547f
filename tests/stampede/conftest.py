"""AWS fixtures: moto's server on a free loopback port, the workers stack from infra/aws deployed once.

Tests share the server (moto builds its EC2 data on first use, ~5 s) and keep
apart by run id: each test uses its own.
"""

from __future__ import annotations

import pytest

from infra.moto_standin import MotoStandin


@pytest.fixture(scope="session")
def moto_server():
    with MotoStandin() as server:
        server.reset()
        server.stack_env = server.deploy_workers_stack()
        yield server


@pytest.fixture
def aws(moto_server, monkeypatch):
    """The environment pointing boto3 and the providers at moto and the deployed stack."""
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    for name, value in (moto_server.env() | moto_server.stack_env).items():
        monkeypatch.setenv(name, value)
    moto_server.keep_tasks_running()
    yield moto_server
    moto_server.keep_tasks_running()
