"""The fast CRM target speaks enough of the Target API for the stock journeys, with a fixed service time.

Unit tests cover the in-memory collection (search, paging, deletes); the
integration tests drive a real server (``FastCrmTarget``: a child process on
a free loopback port) over HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from stampede.infra.fast_crm_target import Collection, FastCrmTarget, Stats, Store

DELAY_MS = 30.0
PASSWORD = "LoadTest123!"


# -- unit ----------------------------------------------------------------------------
def _escrows() -> Collection:
    return Store().kinds["escrows"]


def _body(address: str) -> dict:
    return {"property_address": address, "closing_date": "2026-06-30", "purchase_price": 500000}


def test_search_is_case_insensitive_substring_and_follows_creates_and_deletes() -> None:
    import json

    escrows = _escrows()
    ids = [json.loads(escrows.create(_body(f"LT-run{i % 2} {i} Maple Ave"), "agent"))["id"] for i in range(6)]
    page = json.loads(escrows.page("lt-RUN1", 20, 0))
    assert [i["id"] for i in page["items"]] == ids[1::2] and page["total"] == 3
    escrows.create(_body("LT-run1 99 Oak St"), "agent")  # after the term was cached
    escrows.delete(ids[1])
    page = json.loads(escrows.page("LT-run1", 20, 0))
    assert page["total"] == 3 and ids[1] not in [i["id"] for i in page["items"]]


def test_pages_are_positional_and_total_counts_everything() -> None:
    import json

    escrows = _escrows()
    for i in range(25):
        escrows.create(_body(f"{i} Elm St"), "agent")
    first, second = json.loads(escrows.page("", 10, 0)), json.loads(escrows.page("", 10, 20))
    assert [i["id"] for i in first["items"]] == list(range(1, 11))
    assert [i["id"] for i in second["items"]] == list(range(21, 26))
    assert first["total"] == second["total"] == 25


@pytest.mark.parametrize(
    ("body", "partial", "ok"),
    [
        pytest.param(_body("1 Elm St"), False, True, id="complete"),
        pytest.param({"property_address": "1 Elm St"}, False, False, id="missing-fields"),
        pytest.param({"purchase_price": 1}, True, True, id="patch"),
        pytest.param({"purchase_price": None}, True, False, id="null"),
        pytest.param({"owner": "x"}, True, False, id="unknown-field"),
    ],
)
def test_validation(body: dict, partial: bool, ok: bool) -> None:
    assert (_escrows().validate(body, partial=partial) is not None) is ok


def test_stats_summarise_a_window() -> None:
    stats = Stats()
    now = time.time()
    for ms in (20.0, 21.0, 22.0, 40.0):
        stats.record(now - ms / 1000, now)
    summary = stats.summary(now - 5, now + 5)
    assert summary["requests"] == 4 and 39 < summary["p95_ms"] < 41
    assert stats.summary(now - 100, now - 50)["requests"] == 0


# -- integration --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Iterator[FastCrmTarget]:
    with FastCrmTarget(delay_ms=DELAY_MS, workdir=tmp_path_factory.mktemp("fast-crm"), seed=30) as server:
        yield server


@pytest.fixture(scope="module")
def client(target: FastCrmTarget) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.base_url, timeout=10.0, trust_env=False) as http:
        yield http


@pytest.fixture(scope="module")
def headers(client: httpx.Client) -> dict[str, str]:
    response = client.post("/auth/login", json={"email": "agent@demo.stampede.local", "password": PASSWORD})
    assert response.status_code == 200
    return {"Authorization": f"Bearer {response.json()['token']}"}


integration = pytest.mark.integration


@integration
def test_health_answers_at_once(client: httpx.Client) -> None:
    started = time.perf_counter()
    assert client.get("/health").status_code == 200
    assert time.perf_counter() - started < DELAY_MS / 1000


@integration
@pytest.mark.parametrize(
    ("email", "password"),
    [pytest.param("agent@demo.stampede.local", "wrong", id="bad-password"), pytest.param("nobody@x", PASSWORD, id="unknown")],
)
def test_login_refuses_bad_credentials(client: httpx.Client, email: str, password: str) -> None:
    assert client.post("/auth/login", json={"email": email, "password": password}).status_code == 401


@integration
def test_calls_without_a_token_are_refused(client: httpx.Client) -> None:
    assert client.get("/escrows").status_code == 401
    assert client.get("/escrows", headers={"Authorization": "Bearer nope"}).status_code == 401


@integration
@pytest.mark.parametrize(
    ("kind", "body", "change"),
    [
        pytest.param("escrows", _body("LT-fasttest 1 Maple Ave"), {"purchase_price": 510000}, id="escrows"),
        pytest.param("listings", {"address": "LT-fasttest 2 Oak St", "list_price": 400000, "status": "active"},
                     {"status": "pending"}, id="listings"),
    ],
)
def test_entity_lifecycle(client: httpx.Client, headers: dict, kind: str, body: dict, change: dict) -> None:
    created = client.post(f"/{kind}", json=body, headers=headers)
    assert created.status_code == 201
    entity = created.json()
    assert {k: entity[k] for k in body} == body and isinstance(entity["id"], int)
    path = f"/{kind}/{entity['id']}"
    assert client.get(path, headers=headers).json() == entity
    patched = client.patch(path, json=change, headers=headers)
    assert patched.status_code == 200 and {k: patched.json()[k] for k in change} == change
    found = client.get(f"/{kind}", params={"search": "lt-FASTTEST", "limit": 10}, headers=headers).json()
    assert [i["id"] for i in found["items"]] == [entity["id"]] and found["total"] == 1
    assert client.delete(path, headers=headers).status_code == 204
    assert client.get(path, headers=headers).status_code == 404
    assert client.delete(path, headers=headers).status_code == 404
    assert client.get(f"/{kind}", params={"search": "LT-fasttest"}, headers=headers).json()["total"] == 0


@integration
@pytest.mark.parametrize(
    "params", [pytest.param({"limit": 0}, id="limit-0"), pytest.param({"limit": 101}, id="limit-101"),
               pytest.param({"offset": -1}, id="negative-offset"), pytest.param({"limit": "x"}, id="not-a-number")],
)
def test_bad_paging_is_refused(client: httpx.Client, headers: dict, params: dict) -> None:
    assert client.get("/escrows", params=params, headers=headers).status_code == 422


@integration
def test_invalid_bodies_are_refused(client: httpx.Client, headers: dict) -> None:
    assert client.post("/escrows", json={"property_address": "x"}, headers=headers).status_code == 422
    assert client.post("/listings", content=b"not json", headers=headers).status_code == 422


@integration
def test_seeded_lists_and_the_fixed_service_time(target: FastCrmTarget, client: httpx.Client, headers: dict) -> None:
    since = time.time()
    elapsed = []
    for _ in range(5):
        started = time.perf_counter()
        page = client.get("/listings", params={"limit": 20}, headers=headers).json()
        elapsed.append((time.perf_counter() - started) * 1000)
        assert len(page["items"]) == 20 and page["total"] >= 30
    assert min(elapsed) >= DELAY_MS
    stats = target.stats(since - 1, time.time() + 1)
    assert stats["requests"] >= 5 and DELAY_MS <= stats["p50_ms"] < DELAY_MS + 15


@integration
def test_metrics_are_prometheus_text(target: FastCrmTarget) -> None:
    text = httpx.get(f"{target.root_url}/metrics", timeout=5).text
    assert "process_cpu_seconds_total" in text and "process_resident_memory_bytes" in text


def test_several_processes_serve_one_port_accept_each_others_tokens_and_count_as_one(tmp_path) -> None:
    """``--processes 3``: connections spread over the processes; a token from one works on all; /stats merges."""
    import socket

    with FastCrmTarget(workdir=tmp_path, seed=5, processes=3) as target:
        assert len(target.pids) == 3
        started = time.time()
        token = httpx.post(f"{target.base_url}/auth/login",
                           json={"email": "agent@demo.stampede.local", "password": "LoadTest123!"}).json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        created = set()
        for _ in range(30):  # a fresh connection each: the kernel hashes them over the processes
            with httpx.Client(headers=headers) as client:
                body = client.post(f"{target.base_url}/escrows", json={
                    "property_address": "1 Main St", "closing_date": "2026-01-01", "purchase_price": 1}).json()
                assert client.get(f"{target.base_url}/escrows/{body['id']}").status_code == 200  # same connection
                created.add(body["id"])
                assert client.get(f"{target.base_url}/escrows", params={"limit": 5}).status_code == 200
        assert len(created) == 30  # ids never collide across processes
        with httpx.Client(headers=headers) as client:  # one connection: one process, whoever created each
            deleted = [client.delete(f"{target.base_url}/escrows/{i}").status_code for i in sorted(created)]
            again = client.delete(f"{target.base_url}/escrows/{min(created)}").status_code
        assert deleted == [204] * 30 and again == 404  # a delete reaches the process holding the entity
        assert {i % 3 for i in created} == {0, 1, 2}  # every process created some: the port is shared
        assert httpx.get(f"{target.base_url}/escrows", headers={"Authorization": "Bearer x.y.z"}).status_code == 401
        time.sleep(1.1)
        assert target.stats(int(started), time.time() + 1)["requests"] == 1 + 30 * 3 + 31 + 1  # forwarded: once
    with pytest.raises(OSError):  # all gone: nothing listens on the port
        socket.create_connection(("127.0.0.1", int(target.root_url.rsplit(":", 1)[1])), timeout=0.5)
