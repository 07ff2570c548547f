"""AWS fixtures on the session's moto server (tests/conftest.py), with the workers stack deployed once.

Tests share the server (moto builds its EC2 data on first use, ~5 s) and keep
apart by run id: each test uses its own.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def aws(moto_server, monkeypatch):
    """The environment pointing boto3 and the providers at moto and the deployed stack."""
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    for name, value in (moto_server.env() | moto_server.stack_env).items():
        monkeypatch.setenv(name, value)
    moto_server.keep_tasks_running()
    yield moto_server
    moto_server.keep_tasks_running()


@pytest.fixture
def cloud_only(aws, monkeypatch):
    """Cloud workers without local stand-ins: the master address is a VPC address."""
    monkeypatch.delenv("STAMPEDE_CLOUD_WORKERS_STANDIN")
    monkeypatch.setenv("STAMPEDE_MASTER_HOST", "10.0.1.20")
    return aws
