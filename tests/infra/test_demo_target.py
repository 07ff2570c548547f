"""The demo target keeps the Target API contract and behaves like a real service under load.

Integration tests drive a real server (``DemoTarget``: a child process on a
free loopback port) over HTTP; the few unit tests cover what needs no server.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from stampede.infra.demo_target import server
from stampede.infra.demo_target.server import DemoTarget, start_detached, stop_detached

ROLES = ("agent", "broker", "admin", "readonly")
ENTITIES = [
    pytest.param(
        "escrows", "property_address",
        {"closing_date": "2026-03-31", "purchase_price": 650000},
        {"purchase_price": 700000.0, "closing_date": "2026-04-15"},
        id="escrows",
    ),
    pytest.param(
        "listings", "address",
        {"list_price": 480000, "status": "active"},
        {"status": "pending", "list_price": 475000.0},
        id="listings",
    ),
]


# -- fixtures --------------------------------------------------------------------
@pytest.fixture(scope="module")
def target() -> Iterator[DemoTarget]:
    with DemoTarget() as demo:
        yield demo
        log = demo.log_path.read_text()
    assert "Warning" not in log and "Traceback" not in log, log


@pytest.fixture(scope="module")
def client(target: DemoTarget) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=target.base_url, timeout=10.0, trust_env=False) as http:
        yield http


@pytest.fixture(scope="module")
def auth(target: DemoTarget, client: httpx.Client) -> dict[str, dict[str, str]]:
    """``{role: headers}`` for the four seeded demo accounts."""
    return {role: login(client, role, target.password) for role in ROLES}


def login(client: httpx.Client, role: str, password: str) -> dict[str, str]:
    response = client.post("/auth/login", json={"email": f"{role}@demo.stampede.local", "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def tag() -> str:
    return f"LT-test{uuid.uuid4().hex[:10]}"


def body_for(address_field: str, fields: dict[str, Any], address: str) -> dict[str, Any]:
    return {address_field: address, **fields}


def metric(text: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text; 0 when the series is absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + wanted + '}') if labels else ''} (\S+)$"
    found = re.search(pattern, text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


# -- health and auth ----------------------------------------------------------------
@pytest.mark.integration
def test_health_answers_without_auth(client: httpx.Client) -> None:
    response = client.get("/health")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


@pytest.mark.integration
def test_login_returns_a_token_that_authorizes(client: httpx.Client, target: DemoTarget) -> None:
    headers = login(client, "agent", target.password)
    assert client.get("/escrows", headers=headers).status_code == 200


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "status"),
    [
        pytest.param({"email": "agent@demo.stampede.local", "password": "wrong"}, 401, id="wrong-password"),
        pytest.param({"email": "nobody@demo.stampede.local", "password": "LoadTest123!"}, 401, id="unknown-email"),
        pytest.param({"email": "agent@demo.stampede.local"}, 422, id="no-password"),
    ],
)
def test_bad_logins_are_refused(client: httpx.Client, body: dict[str, str], status: int) -> None:
    response = client.post("/auth/login", json=body)
    assert response.status_code == status
    assert "token" not in response.json()


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no-header"),
        pytest.param({"Authorization": "Bearer not-a-token"}, id="unknown-token"),
        pytest.param({"Authorization": "Basic YWdlbnQ6cHc="}, id="basic-scheme"),
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/escrows"), ("POST", "/escrows"), ("GET", "/listings/1"), ("PATCH", "/listings/1"),
     ("DELETE", "/escrows/1")],
)
def test_calls_without_a_valid_token_are_401(
    client: httpx.Client, headers: dict[str, str], method: str, path: str,
) -> None:
    body = {"address": "x", "list_price": 1} if method == "PATCH" else None
    if method == "POST":
        body = {"property_address": "x", "closing_date": "2026-01-01", "purchase_price": 1}
    response = client.request(method, path, headers=headers, json=body)
    assert response.status_code == 401
    assert response.json() == {"error": "missing or invalid bearer token"}
    assert response.headers["www-authenticate"] == "Bearer"


# -- CRUD, search, validation --------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize(("entity", "address_field", "fields", "changes"), ENTITIES)
def test_crud_round_trip(
    client: httpx.Client, auth: dict[str, dict[str, str]],
    entity: str, address_field: str, fields: dict[str, Any], changes: dict[str, Any],
) -> None:
    headers = auth["agent"]
    body = body_for(address_field, fields, f"{tag()} 12 Maple Ave, Springfield")

    created = client.post(f"/{entity}", json=body, headers=headers)
    assert created.status_code == 201, created.text
    item = created.json()
    assert {k: item[k] for k in body} == {k: (float(v) if k.endswith("price") else v) for k, v in body.items()}
    assert isinstance(item["id"], int) and item["created_by"] and item["created_at"].endswith("Z")

    assert client.get(f"/{entity}/{item['id']}", headers=headers).json() == item
    patched = client.patch(f"/{entity}/{item['id']}", json=changes, headers=headers)
    assert patched.status_code == 200
    assert patched.json() == {**item, **changes}
    assert client.get(f"/{entity}/{item['id']}", headers=headers).json() == {**item, **changes}

    deleted = client.delete(f"/{entity}/{item['id']}", headers=headers)
    assert (deleted.status_code, deleted.content) == (204, b"")
    for method in ("GET", "PATCH", "DELETE"):
        missing = client.request(method, f"/{entity}/{item['id']}", headers=headers,
                                 json=changes if method == "PATCH" else None)
        assert missing.status_code == 404, method
        assert "not found" in missing.json()["error"]


@pytest.mark.integration
@pytest.mark.parametrize(("entity", "address_field", "fields", "changes"), ENTITIES)
def test_search_limit_offset_and_total(
    client: httpx.Client, auth: dict[str, dict[str, str]],
    entity: str, address_field: str, fields: dict[str, Any], changes: dict[str, Any],
) -> None:
    headers, run_tag = auth["broker"], tag()
    ids = [
        client.post(f"/{entity}", json=body_for(address_field, fields, f"{run_tag}-{i} {i} Oak St"),
                    headers=headers).json()["id"]
        for i in range(5)
    ]

    def page(**params: Any) -> dict[str, Any]:
        response = client.get(f"/{entity}", params=params, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    everything = page(search=run_tag.lower())  # case-insensitive
    assert everything["total"] == 5 and [i["id"] for i in everything["items"]] == ids
    first, last = page(search=run_tag, limit=2), page(search=run_tag, limit=2, offset=4)
    assert [i["id"] for i in first["items"]] == ids[:2] and first["total"] == 5
    assert [i["id"] for i in last["items"]] == ids[4:] and last["total"] == 5
    assert page(search=run_tag, offset=5) == {"items": [], "total": 5}
    assert page(search=f"{run_tag}-3")["total"] == 1
    # LIKE wildcards in a search term are literal characters, not patterns.
    assert page(search=f"{run_tag}%")["total"] == 0
    assert page(search=f"{run_tag}-_")["total"] == 0
    assert len(page()["items"]) <= 20  # the default page size


@pytest.mark.integration
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", "/escrows?limit=0", None, id="limit-0"),
        pytest.param("GET", "/escrows?limit=101", None, id="limit-over-100"),
        pytest.param("GET", "/listings?limit=ten", None, id="limit-not-int"),
        pytest.param("GET", "/listings?offset=-1", None, id="negative-offset"),
        pytest.param("GET", "/escrows/abc", None, id="id-not-int"),
        pytest.param("POST", "/escrows", {"property_address": "a", "closing_date": "2026-01-01",
                                          "purchase_price": 0}, id="price-zero"),
        pytest.param("POST", "/escrows", {"property_address": "a", "closing_date": "31/01/2026",
                                          "purchase_price": 1}, id="date-not-iso"),
        pytest.param("POST", "/escrows", {"property_address": "a", "closing_date": 1767225600,
                                          "purchase_price": 1}, id="date-as-timestamp"),
        pytest.param("POST", "/escrows", {"closing_date": "2026-01-01", "purchase_price": 1}, id="no-address"),
        pytest.param("POST", "/listings", {"address": "a", "list_price": 1, "status": "gone"}, id="bad-status"),
        pytest.param("POST", "/listings", {"address": "", "list_price": 1}, id="empty-address"),
        pytest.param("POST", "/listings", {"address": "a", "list_price": -5}, id="negative-price"),
    ],
)
def test_bad_requests_are_422(
    client: httpx.Client, auth: dict[str, dict[str, str]], method: str, path: str, body: Any,
) -> None:
    assert client.request(method, path, json=body, headers=auth["agent"]).status_code == 422


@pytest.mark.integration
def test_patch_refuses_nulls_and_bad_values(client: httpx.Client, auth: dict[str, dict[str, str]]) -> None:
    headers = auth["agent"]
    item = client.post("/listings", json={"address": f"{tag()} 1 Elm St", "list_price": 1}, headers=headers).json()
    assert item["status"] == "active"  # the default for a new listing
    for changes in ({"address": None}, {"status": "gone"}, {"list_price": 0}):
        assert client.patch(f"/listings/{item['id']}", json=changes, headers=headers).status_code == 422
    assert client.get(f"/listings/{item['id']}", headers=headers).json() == item


@pytest.mark.integration
def test_unknown_route_is_404_json(client: httpx.Client) -> None:
    response = client.get("/nothing-here")
    assert response.status_code == 404 and "error" in response.json()


# -- roles --------------------------------------------------------------------------
@pytest.mark.integration
def test_readonly_may_only_read(client: httpx.Client, auth: dict[str, dict[str, str]]) -> None:
    own = client.post("/escrows", json={"property_address": f"{tag()} 3 Pine Rd", "closing_date": "2026-05-01",
                                        "purchase_price": 1}, headers=auth["agent"]).json()
    readonly = auth["readonly"]
    assert client.get("/escrows", headers=readonly).status_code == 200
    assert client.get(f"/escrows/{own['id']}", headers=readonly).status_code == 200
    attempts = [
        client.post("/listings", json={"address": "a", "list_price": 1}, headers=readonly),
        client.patch(f"/escrows/{own['id']}", json={"purchase_price": 2}, headers=readonly),
        client.delete(f"/escrows/{own['id']}", headers=readonly),
    ]
    assert [r.status_code for r in attempts] == [403, 403, 403]
    assert "may only read" in attempts[0].json()["error"]


@pytest.mark.integration
@pytest.mark.parametrize(
    ("creator", "actor", "allowed"),
    [
        pytest.param("agent", "agent", True, id="agent-own"),
        pytest.param("broker", "agent", False, id="agent-others"),
        pytest.param("agent", "broker", True, id="broker-any"),
        pytest.param("broker", "admin", True, id="admin-any"),
    ],
)
def test_only_creator_broker_and_admin_may_change(
    client: httpx.Client, auth: dict[str, dict[str, str]], creator: str, actor: str, allowed: bool,
) -> None:
    item = client.post("/listings", json={"address": f"{tag()} 9 Oak St", "list_price": 10},
                       headers=auth[creator]).json()
    patched = client.patch(f"/listings/{item['id']}", json={"status": "sold"}, headers=auth[actor])
    deleted = client.delete(f"/listings/{item['id']}", headers=auth[actor])
    assert (patched.status_code, deleted.status_code) == ((200, 204) if allowed else (403, 403))


@pytest.mark.integration
def test_concurrent_writers_all_succeed(target: DemoTarget, auth: dict[str, dict[str, str]]) -> None:
    """SQLite has one writer at a time: writers must queue (busy_timeout), never fail."""
    run_tag, statuses = tag(), []

    def writer(n: int) -> None:
        with httpx.Client(base_url=target.base_url, headers=auth["agent"], timeout=30.0, trust_env=False) as http:
            for i in range(8):
                created = http.post("/listings", json={"address": f"{run_tag}-{n}-{i} 1 Elm St", "list_price": 1})
                statuses.append(created.status_code)
                if created.status_code == 201:
                    item_id = created.json()["id"]
                    statuses.append(http.patch(f"/listings/{item_id}", json={"status": "sold"}).status_code)
                    statuses.append(http.delete(f"/listings/{item_id}").status_code)

    threads = [threading.Thread(target=writer, args=(n,), daemon=True) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(set(statuses)) == [200, 201, 204] and len(statuses) == 12 * 8 * 3


# -- metrics ----------------------------------------------------------------------------
@pytest.mark.integration
def test_metrics_expose_requests_pool_and_process(
    client: httpx.Client, target: DemoTarget, auth: dict[str, dict[str, str]],
) -> None:
    item = client.post("/listings", json={"address": f"{tag()} 5 Park Pl", "list_price": 1},
                       headers=auth["agent"]).json()
    client.get(f"/listings/{item['id']}", headers=auth["agent"])
    text = httpx.get(target.metrics_url, trust_env=False).text

    assert metric(text, "demo_db_pool_size") == 8
    assert "demo_db_pool_in_use " in text and "demo_db_pool_waiting " in text
    assert metric(text, "demo_http_requests_in_flight") >= 1  # this very scrape
    assert metric(text, "demo_http_requests_total", method="POST", route="/v1/listings", status="201") >= 1
    # Route templates, never raw ids, so label cardinality stays bounded.
    assert metric(text, "demo_http_requests_total", method="GET", route="/v1/listings/{item_id}", status="200") >= 1
    assert f'route="/v1/listings/{item["id"]}"' not in text
    assert metric(text, "demo_http_request_duration_seconds_count",
                  method="POST", route="/v1/auth/login", status="200") >= 4
    assert metric(text, "process_resident_memory_bytes") > 0
    assert metric(text, "process_cpu_seconds_total") > 0


# -- the pool is a real bottleneck ------------------------------------------------------------
def _fire(
    base_url: str, headers: dict[str, str], path: str, count: int,
) -> tuple[list[httpx.Response], list[threading.Thread]]:
    """``count`` requests at once from threads (released together by a barrier); bounded by timeouts."""
    responses: list[httpx.Response] = []
    barrier = threading.Barrier(count)

    def one() -> None:
        with httpx.Client(base_url=base_url, timeout=20.0, trust_env=False) as http:
            barrier.wait(timeout=10)
            responses.append(http.get(path, headers=headers))

    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return responses, threads


@pytest.mark.integration
def test_pool_of_one_serialises_requests_and_reports_waiters() -> None:
    delay_s, count = 0.3, 4
    with DemoTarget(pool_size=1, pool_timeout_s=30, extra_latency_ms={"GET /v1/escrows": delay_s * 1000}) as demo, \
            httpx.Client(base_url=demo.base_url, timeout=10.0, trust_env=False) as http:
        headers = login(http, "readonly", demo.password)
        started = time.perf_counter()
        responses, threads = _fire(demo.base_url, headers, "/escrows", count)
        samples = []
        while any(t.is_alive() for t in threads) and time.perf_counter() - started < 20:
            text = http.get(demo.metrics_url).text
            samples.append((metric(text, "demo_db_pool_in_use"), metric(text, "demo_db_pool_waiting")))
            time.sleep(0.05)
        for thread in threads:
            thread.join(timeout=20)
        elapsed = time.perf_counter() - started
        http.get("/listings", headers=headers)
        text = http.get(demo.metrics_url).text

    assert [r.status_code for r in responses] == [200] * count
    assert max(waiting for _, waiting in samples) >= 1
    assert max(in_use for in_use, _ in samples) <= 1
    assert elapsed >= count * delay_s * 0.95  # one connection: the slow requests ran one after another
    # The extra latency is the escrow list's alone.
    labels = {"method": "GET", "route": "/v1/listings", "status": "200"}
    assert metric(text, "demo_http_request_duration_seconds_sum", **labels) < delay_s


@pytest.mark.integration
def test_exhausted_pool_answers_503() -> None:
    with DemoTarget(pool_size=1, pool_timeout_s=0.2, extra_latency_ms={"GET /v1/escrows": 1500}) as demo, \
            httpx.Client(base_url=demo.base_url, timeout=10.0, trust_env=False) as http:
        headers = login(http, "agent", demo.password)
        responses, threads = _fire(demo.base_url, headers, "/escrows", 4)
        for thread in threads:
            thread.join(timeout=20)
        text = http.get(demo.metrics_url).text

    statuses = sorted(r.status_code for r in responses)
    assert 200 in statuses and 503 in statuses, statuses
    refused = next(r for r in responses if r.status_code == 503)
    assert refused.json() == {"error": "database pool exhausted"}
    assert metric(text, "demo_db_pool_timeouts_total") >= 1
    assert metric(text, "demo_http_requests_total", method="GET", route="/v1/escrows", status="503") >= 1


# -- process control ------------------------------------------------------------------------
@pytest.mark.integration
def test_stop_ends_the_process_and_is_idempotent() -> None:
    demo = DemoTarget().start()
    pid, workdir = demo.pid, demo.workdir
    demo.stop()
    demo.stop()
    assert not server._is_alive(pid)
    assert workdir is not None and not workdir.exists()


@pytest.mark.integration
def test_detached_start_and_stop_with_a_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "demo.json"
    try:
        state = start_detached(state_file)
        assert httpx.get(state["base_url"] + "/health", trust_env=False).status_code == 200
        assert start_detached(state_file)["pid"] == state["pid"]  # a live one is reused
    finally:
        assert stop_detached(state_file)
    assert not server._is_alive(state["pid"]) and not state_file.exists()
    assert stop_detached(state_file) is False


# -- no server needed ------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "example.com", "::", "10.0.0.1"])
def test_cli_refuses_non_loopback_hosts(host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stampede.infra.demo_target.__main__ import main

    assert main(["--host", host, "--port", "0", "--db", str(tmp_path / "demo.db")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "loopback only" in err
    assert not (tmp_path / "demo.db").exists()


@pytest.mark.parametrize(("host", "literal"), [("127.0.0.1", "127.0.0.1"), ("127.8.0.2", "127.8.0.2"),
                                               ("::1", "::1"), ("[::1]", "::1"), ("localhost", "127.0.0.1")])
def test_loopback_hosts_are_accepted(host: str, literal: str) -> None:
    from stampede.infra.demo_target.__main__ import loopback_host

    assert loopback_host(host) == literal


def test_extra_latency_for_an_unknown_route_is_an_error(tmp_path: Path) -> None:
    from stampede.infra.demo_target.app import create_app

    with pytest.raises(ValueError, match="unknown route"):
        create_app(database_url=f"sqlite:///{tmp_path / 'demo.db'}", password="pw",
                   extra_latency_ms={"GET /v1/listing": 50})


def test_server_module_agrees_with_the_app_on_the_password() -> None:
    from stampede.infra.demo_target import app

    assert (server.PASSWORD_ENV, server.DEFAULT_PASSWORD) == (app.DEMO_PASSWORD_ENV, app.DEMO_PASSWORD_DEFAULT)
