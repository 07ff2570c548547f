"""AWS fixtures on the session's moto server (``aws`` and ``moto_server`` are in tests/conftest.py).

Tests share the server (moto builds its EC2 data on first use, ~5 s) and keep
apart by run id: each test uses its own.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def cloud_only(aws, monkeypatch):
    """Cloud workers without local stand-ins: the master address is a VPC address."""
    monkeypatch.delenv("STAMPEDE_CLOUD_WORKERS_STANDIN")
    monkeypatch.setenv("STAMPEDE_MASTER_HOST", "10.0.1.20")
    return aws
