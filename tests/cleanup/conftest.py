"""Targets for the cleanup tests, each on a free loopback port, and the ledger a run would have written."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from stampede.cleanup.ledger import LedgerEntry, encode_entries, encode_header
from stampede.plan.run_plan import DEFAULT_ACCOUNTS


@pytest.fixture(scope="session")
def cleanup_target() -> Iterator:
    """The demo CRM (FastAPI + SQLite), shared by the session."""
    from stampede.infra.demo_target.server import DemoTarget

    with DemoTarget() as target:
        yield target


@pytest.fixture
def json_api(tmp_path) -> Iterator:
    """json-server (from npm, nobody here wrote it): an empty /showings collection, and /health (a singular resource)."""
    from stampede.infra.json_server import JsonServer

    with JsonServer(workdir=tmp_path / "json-server", data={"showings": [], "health": {"status": "ok"}}) as api:
        yield api


@pytest.fixture
def tag() -> str:
    """A fresh run tag."""
    return f"LT-t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def ledger_file(tmp_path) -> Callable[..., Path]:
    """Writes the ledger the Locust master would have written for some entities."""

    def write(entries: Iterable[LedgerEntry], *, run_tag: str, target: str, cleanup: object = None,
              name: str = "ledger.jsonl") -> Path:
        path = tmp_path / name
        path.write_bytes(encode_header(run_tag=run_tag, target=target, cleanup=cleanup) + encode_entries(entries))
        return path

    return write


@pytest.fixture
def crm() -> Iterator[Callable[..., httpx.Client]]:
    """Logged-in clients of a CRM target by role, closed after the test."""
    clients: list[httpx.Client] = []

    def client(target, role: str = "admin") -> httpx.Client:
        c = httpx.Client(base_url=target.base_url, follow_redirects=False, timeout=10, trust_env=False)
        clients.append(c)
        login = c.post("/auth/login", json={"email": DEFAULT_ACCOUNTS[role], "password": target.password})
        c.headers["Authorization"] = f"Bearer {login.json()['token']}"
        return c

    yield client
    for c in clients:
        c.close()
