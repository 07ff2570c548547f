"""Cleanup deletes exactly the run's tagged entities, proves none is left, and is safe to repeat."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator

import httpx
import pytest

from stampede.cleanup import run_data
from stampede.cleanup.run_data import CleanupError, cleanup_run_data, tag_matcher
from stampede.loadtests.journeys import data
from stampede.plan.run_plan import DEFAULT_ACCOUNTS

ADMIN = DEFAULT_ACCOUNTS["admin"]


# -- against the demo target -------------------------------------------------------
@pytest.fixture
def api(cleanup_target) -> Iterator[Callable[[str], httpx.Client]]:
    """Logged-in clients by role, closed after the test."""
    clients: list[httpx.Client] = []

    def client(role: str) -> httpx.Client:
        c = httpx.Client(base_url=cleanup_target.base_url, follow_redirects=False, timeout=10, trust_env=False)
        clients.append(c)
        login = c.post("/auth/login", json={"email": DEFAULT_ACCOUNTS[role], "password": cleanup_target.password})
        c.headers["Authorization"] = f"Bearer {login.json()['token']}"
        return c

    yield client
    for c in clients:
        c.close()


def create(client: httpx.Client, kind: str, address: str) -> int:
    body = (
        {"property_address": address, "closing_date": data.closing_date(), "purchase_price": data.price()}
        if kind == "escrows" else {"address": address, "list_price": data.price(), "status": "active"}
    )
    response = client.post(f"/{kind}", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def new_tag() -> str:
    return f"LT-t{uuid.uuid4().hex[:10]}"


@pytest.mark.integration
def test_deletes_every_tagged_entity_leaves_the_rest_and_is_idempotent(cleanup_target, api) -> None:
    tag = new_tag()
    agent, broker, admin = api("agent"), api("broker"), api("admin")
    tagged = {
        "escrows": [create(agent, "escrows", data.tagged_address(tag)) for _ in range(23)],
        "listings": [create(broker, "listings", data.tagged_address(tag)) for _ in range(12)],
    }
    untouchable = {
        "escrows": [
            create(agent, "escrows", "742 Evergreen Terrace, Springfield"),
            create(agent, "escrows", data.tagged_address(f"{tag}x")),  # another run whose tag starts with ours
            create(agent, "escrows", f"Lot{tag}-1 12 Oak St, Salem"),  # the tag glued to a word
        ],
        "listings": [
            create(broker, "listings", "1 Infinite Loop, Cupertino"),
            create(broker, "listings", data.tagged_address(f"{tag}0")),
        ],
    }

    first = cleanup_run_data(base_url=cleanup_target.base_url, run_tag=tag, email=ADMIN,
                             password=cleanup_target.password, page_size=5, timeout_s=60)
    assert (first.found, first.deleted, first.left, first.errors) == (35, 35, 0, [])
    assert first.skipped == 3  # found by the search, not carrying the tag as a whole token: never touched

    second = cleanup_run_data(base_url=cleanup_target.base_url, run_tag=tag, email=ADMIN,
                              password=cleanup_target.password, page_size=5, timeout_s=60)
    assert (second.found, second.deleted, second.left, second.errors) == (0, 0, 0, [])

    for kind, ids in tagged.items():
        assert all(admin.get(f"/{kind}/{i}").status_code == 404 for i in ids), kind
    for kind, ids in untouchable.items():
        assert all(admin.get(f"/{kind}/{i}").status_code == 200 for i in ids), kind


@pytest.mark.integration
def test_the_password_is_never_logged_and_a_wrong_one_is_refused(cleanup_target, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    cleanup_run_data(base_url=cleanup_target.base_url, run_tag=new_tag(), email=ADMIN,
                     password=cleanup_target.password, timeout_s=30)
    with pytest.raises(CleanupError, match="could not log in: POST /auth/login: HTTP 401") as refused:
        cleanup_run_data(base_url=cleanup_target.base_url, run_tag=new_tag(), email=ADMIN,
                         password="not-the-password-xyz", timeout_s=30)
    assert "not-the-password-xyz" not in str(refused.value)
    assert cleanup_target.password not in caplog.text and "not-the-password-xyz" not in caplog.text


@pytest.mark.integration
def test_a_readonly_account_cannot_delete_and_says_so(cleanup_target, api) -> None:
    tag = new_tag()
    escrow_id = create(api("agent"), "escrows", data.tagged_address(tag))
    report = cleanup_run_data(base_url=cleanup_target.base_url, run_tag=tag, email=DEFAULT_ACCOUNTS["readonly"],
                              password=cleanup_target.password, timeout_s=30)
    assert (report.found, report.deleted, report.left) == (1, 0, 1)
    assert report.errors == [f"DELETE /escrows/{escrow_id}: HTTP 403"]
    assert not report.ok


# -- refusals and resilience, without a server ---------------------------------------
@pytest.mark.parametrize("tag", [
    pytest.param("", id="empty"),
    pytest.param("LT-", id="prefix-only"),
    pytest.param("LT", id="no-dash"),
    pytest.param("lt-abc", id="lower-case-prefix"),
    pytest.param("LT-abc def", id="space"),
    pytest.param("LT-abc%", id="wildcard"),
    pytest.param("LT-abc-def", id="second-dash"),
    pytest.param(" LT-abc", id="leading-space"),
    pytest.param("LT-abc\n", id="trailing-newline"),
    pytest.param("Test", id="no-tag"),
])
def test_a_bad_run_tag_is_refused_before_anything_is_sent(tag: str) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError(f"nothing may be sent, got {request.method} {request.url}")

    with pytest.raises(ValueError, match="refused"):
        cleanup_run_data(base_url="http://127.0.0.1:9/v1", run_tag=tag, email=ADMIN, password="x",
                         transport=httpx.MockTransport(refuse))


def test_the_tag_matches_as_a_whole_token_only() -> None:
    matcher = tag_matcher("LT-abc")
    assert matcher.search("LT-abc-k3f9q2 12 Oak St, Salem")
    assert matcher.search("12 Oak St LT-abc")
    assert not matcher.search("LT-abcd-k3f9q2 12 Oak St")
    assert not matcher.search("XLT-abc-1 12 Oak St")


class FakeTarget:
    """A scripted target API: escrows in memory, with scripted failures per request."""

    def __init__(self, escrows: dict[int, str], *, failures: list[httpx.Response] | None = None) -> None:
        self.escrows = dict(escrows)
        self.failures = list(failures or [])  # served, in order, before the real answer of each non-login call
        self.log: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.log.append(f"{request.method} {request.url.path}")
        if request.url.path == "/v1/auth/login":
            return httpx.Response(200, json={"token": "t0k"})
        if self.failures:
            return self.failures.pop(0)
        kind = request.url.path.split("/")[2]
        if request.method == "GET":
            items = [] if kind == "listings" else [
                {"id": i, "property_address": a} for i, a in sorted(self.escrows.items())
                if request.url.params["search"] in a
            ]
            offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
            return httpx.Response(200, json={"items": items[offset:offset + limit], "total": len(items)})
        if request.method == "DELETE":
            gone = self.escrows.pop(int(request.url.path.rsplit("/", 1)[1]), None)
            return httpx.Response(204 if gone else 404)
        return httpx.Response(405)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch) -> None:
    monkeypatch.setattr(run_data, "BACKOFF_FIRST_S", 0.001)


def test_transient_errors_are_retried() -> None:
    fake = FakeTarget(
        {1: "LT-abc-1 1 Oak St", 2: "LT-abc-2 2 Oak St"},
        failures=[httpx.Response(503), httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(502)],
    )
    report = cleanup_run_data(base_url="http://fake/v1", run_tag="LT-abc", email=ADMIN, password="x",
                              transport=httpx.MockTransport(fake))
    assert (report.found, report.deleted, report.left, report.errors) == (2, 2, 0, [])
    assert fake.escrows == {}


def test_connection_errors_are_retried() -> None:
    fake = FakeTarget({1: "LT-abc-1 1 Oak St"})
    calls = {"n": 0}

    def flaky(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        if calls["n"] in (2, 3):
            raise httpx.ConnectError("connection refused", request=request)
        return fake(request)

    report = cleanup_run_data(base_url="http://fake/v1", run_tag="LT-abc", email=ADMIN, password="x",
                              transport=httpx.MockTransport(flaky))
    assert (report.found, report.deleted, report.left, report.errors) == (1, 1, 0, [])


def test_an_entity_without_the_tag_is_never_deleted_even_if_the_search_returns_it() -> None:
    fake = FakeTarget({1: "LT-abc-1 1 Oak St", 2: "LT-abcd-2 2 Oak St", 3: "12 Oak St (LT-abc)"})
    report = cleanup_run_data(base_url="http://fake/v1", run_tag="LT-abc", email=ADMIN, password="x",
                              transport=httpx.MockTransport(fake))
    assert "DELETE /v1/escrows/2" not in fake.log
    assert fake.escrows == {2: "LT-abcd-2 2 Oak St"}
    assert (report.found, report.deleted, report.left, report.skipped) == (2, 2, 0, 1)


def test_a_404_counts_as_gone() -> None:
    fake = FakeTarget({1: "LT-abc-1 1 Oak St"})
    original = fake.__call__

    def already_gone(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            fake.escrows.clear()
            return httpx.Response(404, json={"error": "not found"})
        return original(request)

    report = cleanup_run_data(base_url="http://fake/v1", run_tag="LT-abc", email=ADMIN, password="x",
                              transport=httpx.MockTransport(already_gone))
    assert (report.found, report.deleted, report.left, report.errors) == (1, 1, 0, [])


def test_a_redirect_is_not_followed() -> None:
    def redirect(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/auth/login":
            return httpx.Response(200, json={"token": "t0k"})
        return httpx.Response(302, headers={"Location": "http://elsewhere.example/v1/escrows"})

    with pytest.raises(CleanupError, match="302 redirect, not followed") as failed:
        cleanup_run_data(base_url="http://fake/v1", run_tag="LT-abc", email=ADMIN, password="x",
                         transport=httpx.MockTransport(redirect))
    assert any("302 redirect" in e for e in failed.value.report.errors)


def test_a_target_that_never_recovers_stops_within_the_time_budget() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"token": "t0k"}) if request.url.path.endswith("/login") else httpx.Response(503)

    with pytest.raises(CleanupError, match="could not count what is left") as failed:
        cleanup_run_data(base_url="http://fake/v1", run_tag="LT-abc", email=ADMIN, password="x", timeout_s=2,
                         transport=httpx.MockTransport(down))
    assert failed.value.report.errors
    json.dumps(failed.value.report.to_dict())  # a report is always serialisable


def test_the_time_budget_bounds_retries(monkeypatch) -> None:
    monkeypatch.setattr(run_data, "BACKOFF_FIRST_S", 0.2)
    monkeypatch.setattr(run_data, "MAX_ATTEMPTS", 1000)

    def down(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"token": "t0k"}) if request.url.path.endswith("/login") else httpx.Response(503)

    started = time.monotonic()
    with pytest.raises(CleanupError, match="time budget ran out"):
        cleanup_run_data(base_url="http://fake/v1", run_tag="LT-abc", email=ADMIN, password="x", timeout_s=1.5,
                         transport=httpx.MockTransport(down))
    assert time.monotonic() - started < 2.0
