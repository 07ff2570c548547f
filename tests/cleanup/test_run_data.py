"""Cleanup deletes exactly what the run's ledger recorded, sweeps what carries its tag, and proves what is left.

Against real servers: the demo CRM, the fast CRM target with a known service time
(and a rate limit), json-server from npm, a canary that must count nothing.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from stampede.cleanup.api import Credentials
from stampede.cleanup.ledger import LedgerEntry, encode_entries, encode_header, read_ledger
from stampede.cleanup.run_data import Timing, clean_run, tag_matcher
from stampede.infra.canary import Canary
from stampede.infra.fast_crm_target import FastCrmTarget
from stampede.loadtests.journeys import data
from stampede.plan.cleanup_declaration import parse_cleanup, stock_declaration
from stampede.plan.run_plan import DEFAULT_ACCOUNTS

pytestmark = pytest.mark.integration
PASSWORD = os.environ["STAMPEDE_TARGET_PASSWORD"]
POSTCODE = "Gedimino pr. 9, LT-01103 Vilnius"  # looks like a run tag; belongs to no run

SHOWINGS_SEARCH = {"request": "GET /showings?q={run_tag}", "paging": {"page": "_page", "limit": "_limit", "size": 50}}


def credentials(password: str = PASSWORD) -> Credentials:
    return Credentials(password=password, accounts=dict(DEFAULT_ACCOUNTS))


def fail(field: str, problem: str, fix: str) -> ValueError:
    return ValueError(f"{field}: {problem}; fix: {fix}")


def declaration(raw: dict):
    return parse_cleanup(raw, fail, source="test")


def create(client: httpx.Client, kind: str, address: str) -> str:
    body = (
        {"property_address": address, "closing_date": data.closing_date(), "purchase_price": data.price()}
        if kind == "escrows" else {"address": address, "list_price": data.price(), "status": "active"}
    )
    response = client.post(f"/{kind}", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def clean(target_url: str, tag: str, ledger_path: Path | None, decl, tmp_path: Path, **kw):
    ledger = read_ledger([ledger_path] if ledger_path else [])
    return clean_run(base_url=target_url, run_tag=tag, declaration=decl, ledger=ledger,
                     journal_path=tmp_path / "journal.jsonl", credentials=kw.pop("creds", credentials()), **kw)


# -- the stock CRM declaration, against the demo target ---------------------------------------------
def test_deletes_what_the_ledger_recorded_sweeps_the_rest_and_touches_nothing_else(
        cleanup_target, crm, tag, ledger_file, tmp_path):
    agent, broker, admin = crm(cleanup_target, "agent"), crm(cleanup_target, "broker"), crm(cleanup_target)
    escrows = [create(agent, "escrows", data.tagged_address(tag)) for _ in range(23)]
    listings = [create(broker, "listings", data.tagged_address(tag)) for _ in range(12)]
    unrecorded = create(agent, "escrows", data.tagged_address(tag))  # a worker killed before it reported this one
    untouchable = {
        "escrows": [create(agent, "escrows", "742 Evergreen Terrace, Springfield"),
                    create(agent, "escrows", data.tagged_address(f"{tag}x")),  # a longer tag that starts like ours
                    create(agent, "escrows", f"Lot{tag}-1 12 Oak St, Salem"),  # the tag glued to a word
                    create(agent, "escrows", POSTCODE)],
        "listings": [create(broker, "listings", data.tagged_address(f"{tag}0")), create(broker, "listings", POSTCODE)],
    }
    entries = [LedgerEntry("escrow", i, f"/escrows/{i}") for i in escrows]
    entries += [LedgerEntry("listing", i, f"/listings/{i}") for i in listings]
    path = ledger_file(entries, run_tag=tag, target=cleanup_target.base_url)

    first = clean(cleanup_target.base_url, tag, path, stock_declaration(), tmp_path)
    assert (first.created, first.deleted, first.swept, first.left, first.error) == (35, 36, 1, 0, None)
    assert first.clean and first.proof == "search" and first.kinds["escrow"].deleted == 23
    # work proportional to what was created: one login, 35 deletes, a sweep and a count per kind (few pages)
    assert first.requests <= 1 + 35 + 1 + 2 * 2

    second = clean(cleanup_target.base_url, tag, path, stock_declaration(), tmp_path)
    assert (second.deleted, second.resumed, second.left, second.error) == (0, 35, 0, None)

    for kind, ids in (("escrows", [*escrows, unrecorded]), ("listings", listings)):
        assert all(admin.get(f"/{kind}/{i}").status_code == 404 for i in ids), kind
    for kind, ids in untouchable.items():
        assert all(admin.get(f"/{kind}/{i}").status_code == 200 for i in ids), kind


def test_the_password_is_never_logged_and_a_wrong_one_proves_nothing(cleanup_target, crm, tag, ledger_file,
                                                                     tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    escrow = create(crm(cleanup_target, "agent"), "escrows", data.tagged_address(tag))
    path = ledger_file([LedgerEntry("escrow", escrow)], run_tag=tag, target=cleanup_target.base_url)
    wrong = clean(cleanup_target.base_url, tag, path, stock_declaration(), tmp_path,
                  creds=credentials("not-the-password-xyz"))
    assert wrong.left is None and not wrong.ok and wrong.deleted == 0
    assert "could not authenticate: POST /auth/login: HTTP 401" in wrong.error
    right = clean(cleanup_target.base_url, tag, path, stock_declaration(), tmp_path)
    assert right.clean and right.deleted == 1
    assert cleanup_target.password not in caplog.text and "not-the-password-xyz" not in caplog.text
    assert "not-the-password-xyz" not in wrong.error


def test_an_account_that_may_not_delete_leaves_entities_and_says_so(cleanup_target, crm, tag, ledger_file, tmp_path):
    escrow = create(crm(cleanup_target, "agent"), "escrows", data.tagged_address(tag))
    path = ledger_file([LedgerEntry("escrow", escrow)], run_tag=tag, target=cleanup_target.base_url)
    readonly = Credentials(password=PASSWORD, accounts={**DEFAULT_ACCOUNTS, "admin": DEFAULT_ACCOUNTS["readonly"]})
    result = clean(cleanup_target.base_url, tag, path, stock_declaration(), tmp_path, creds=readonly)
    assert (result.deleted, result.left, result.ok) == (0, 1, False)
    assert f"DELETE /escrows/{escrow}: HTTP 403" in result.error


@pytest.mark.parametrize("bad", ["", "LT-", "LT", "lt-abc", "LT-abc def", "LT-abc%", "LT-abc-def", " LT-abc",
                                 "LT-abc\n", "Test"])
def test_a_bad_run_tag_is_refused_before_anything_is_sent(bad, tmp_path):
    with Canary() as canary:
        with pytest.raises(ValueError, match="refused"):
            clean(canary.base_url, bad, None, stock_declaration(), tmp_path)
        assert canary.hits() == 0


def test_the_tag_matches_as_a_whole_token_only():
    matcher = tag_matcher("LT-abc")
    assert matcher.search("LT-abc-k3f9q2 12 Oak St, Salem") and matcher.search("12 Oak St LT-abc")
    assert not matcher.search("LT-abcd-k3f9q2 12 Oak St") and not matcher.search("XLT-abc-1 12 Oak St")


# -- what goes wrong on the wire ------------------------------------------------------------------------
class _Redirecting(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - the login answers
        body = b'{"token": "t0k"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_DELETE(self):  # noqa: N802
        self.send_response(302)
        self.send_header("Location", "http://127.0.0.2:9/elsewhere")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_DELETE  # noqa: N815

    def log_message(self, *_args):
        pass


def test_a_redirect_is_never_followed(tag, ledger_file, tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Redirecting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with Canary() as elsewhere:  # where the Location points: nothing may follow it there
            url = f"http://127.0.0.1:{server.server_address[1]}/v1"
            path = ledger_file([LedgerEntry("escrow", "1")], run_tag=tag, target=url)
            result = clean(url, tag, path, stock_declaration(), tmp_path)
            assert elsewhere.hits() == 0
    finally:
        server.shutdown()
    assert not result.ok and "HTTP 302 redirect, not followed" in result.error


def test_a_dead_target_gives_up_after_a_stall_and_leaves_left_unknown(tag, ledger_file, tmp_path):
    with Canary() as canary:
        url = canary.base_url
    path = ledger_file([LedgerEntry("escrow", str(i)) for i in range(50)], run_tag=tag, target=url)
    started = time.monotonic()
    result = clean(url, tag, path, stock_declaration(), tmp_path, timing=Timing(base_s=5, stall_s=2))
    assert time.monotonic() - started < 30
    assert result.left is None and not result.ok and "could not authenticate" in result.error


def test_it_backs_off_when_the_api_rate_limits_and_still_finishes(tag, tmp_path):
    with FastCrmTarget(workdir=tmp_path, seed=0, max_rps=150, seed_tagged=(tag, 400)) as target:
        ledger = tmp_path / "ledger.jsonl"
        entries = [LedgerEntry(k, str(i)) for k in ("escrow", "listing") for i in range(1, 401)]
        ledger.write_bytes(encode_header(run_tag=tag, target=target.base_url, cleanup=None) + encode_entries(entries))
        started = time.monotonic()
        result = clean(target.base_url, tag, ledger, replace(stock_declaration(), concurrency=32), tmp_path)
        elapsed = time.monotonic() - started
    assert result.clean and result.deleted == 800 and result.throttled > 0
    # never faster than the API allows: the login and 800 deletes need 6 of its one-second windows of 150, and
    # the first and last may be slivers, so at least 4 whole seconds pass (the 429s were waited out)
    assert elapsed >= math.ceil(801 / 150) - 2, elapsed


def test_tens_of_thousands_with_a_known_service_time_in_the_time_allowed(tag, tmp_path):
    """20,000 of the run's entities on a target answering every call in 20 ms: deleted from the ledger
    (no listing first), proved gone by the search, at the concurrency the declaration allows."""
    per_kind = 10_000
    with FastCrmTarget(delay_ms=20, workdir=tmp_path, seed=50, seed_tagged=(tag, per_kind)) as target:
        entries = [LedgerEntry(k, str(i), f"/{k}s/{i}") for k in ("escrow", "listing") for i in range(51, 51 + per_kind)]
        ledger = tmp_path / "ledger.jsonl"
        ledger.write_bytes(encode_header(run_tag=tag, target=target.base_url, cleanup=None) + encode_entries(entries))
        timing = Timing()
        result = clean(target.base_url, tag, ledger, stock_declaration(), tmp_path, timing=timing)
        with httpx.Client(base_url=target.base_url, timeout=30, trust_env=False) as client:
            token = client.post("/auth/login", json={"email": DEFAULT_ACCOUNTS["admin"], "password": PASSWORD})
            client.headers["Authorization"] = f"Bearer {token.json()['token']}"
            totals = [client.get(f"/{kind}", params={"limit": 1}).json()["total"] for kind in ("escrows", "listings")]
    assert result.clean and result.deleted == 2 * per_kind and result.proof == "search"
    # 16 in flight at 20 ms each is 800/s at best; a shared 2-core machine still gets more than half of it
    assert result.deletes_per_s >= 400, result.deletes_per_s
    assert result.duration_s < timing.base_s + 2 * per_kind / timing.min_rate
    assert result.requests <= 2 * per_kind + 1 + 4  # one per entity, the login, an empty sweep and count per kind
    assert totals == [50, 50]  # the seeded entities that were never the run's are all still there


# -- any API: json-server ---------------------------------------------------------------------------
def showing(api, notes: str) -> str:
    with httpx.Client(timeout=10, trust_env=False) as client:
        response = client.post(f"{api.base_url}/showings", json={"listing": 7, "notes": notes})
    assert response.status_code == 201
    return str(response.json()["id"])


def test_without_a_search_each_recorded_entity_is_checked_one_by_one(json_api, tag, ledger_file, tmp_path):
    ids = [showing(json_api, f"{tag} viewing {i}") for i in range(12)]
    others = [showing(json_api, "a buyer's own viewing"), showing(json_api, POSTCODE)]
    decl = declaration({"kinds": {"showing": {"delete": "DELETE /showings/{id}"}}})
    path = ledger_file([LedgerEntry("showing", i, f"/showings/{i}") for i in ids], run_tag=tag, target=json_api.base_url)
    result = clean(json_api.base_url, tag, path, decl, tmp_path)
    assert (result.deleted, result.left, result.proof, result.error) == (12, 0, "check", None)
    assert result.requests == 12 + 12  # a DELETE, then a GET that answers 404, for each
    assert sorted(s["id"] for s in json_api.items("showings")) == sorted(int(i) for i in others)


def test_an_undeclared_kind_is_checked_and_reported_as_left(json_api, tag, ledger_file, tmp_path):
    ids = [showing(json_api, f"{tag} viewing") for _ in range(5)]
    path = ledger_file([LedgerEntry("showing", i, f"/showings/{i}") for i in ids], run_tag=tag, target=json_api.base_url)
    result = clean(json_api.base_url, tag, path, None, tmp_path)
    assert result.left == 5 and not result.ok and result.deleted == 0
    assert "no cleanup declared for showing (5 recorded as created)" in result.error
    assert len(json_api.items("showings")) == 5  # nothing was deleted without a declaration


def test_nothing_declared_and_nothing_recorded_proves_nothing(json_api, tag, tmp_path):
    result = clean(json_api.base_url, tag, None, None, tmp_path)
    assert result.left is None and not result.ok
    assert "no cleanup declared and nothing recorded as created" in result.error


def test_cleanup_none_is_clean_only_when_nothing_was_recorded(json_api, tag, ledger_file, tmp_path):
    none = declaration("none")
    assert clean(json_api.base_url, tag, None, none, tmp_path).clean
    path = ledger_file([LedgerEntry("showing", "1")], run_tag=tag, target=json_api.base_url)
    recorded = clean(json_api.base_url, tag, path, none, tmp_path)
    assert recorded.left == 1 and "cleanup: none, but the run recorded 1" in recorded.error


def test_an_id_the_api_gave_to_someone_else_is_never_deleted_on_a_retry(json_api, tag, ledger_file, tmp_path):
    """A cleanup killed between its DELETE and the answer: json-server hands the freed id out again."""
    ours = showing(json_api, f"{tag} viewing")
    assert httpx.delete(f"{json_api.base_url}/showings/{ours}", timeout=10).status_code == 200  # it went through...
    theirs = showing(json_api, "someone else's viewing")
    assert theirs == ours  # ...and the largest id plus one is the same id again
    (tmp_path / "journal.jsonl").write_text(f'["sent","showing","{ours}"]\n')  # ...but no answer was journaled
    decl = declaration({"kinds": {"showing": {"delete": "DELETE /showings/{id}", "search": SHOWINGS_SEARCH}}})
    path = ledger_file([LedgerEntry("showing", ours, f"/showings/{ours}")], run_tag=tag, target=json_api.base_url)
    result = clean(json_api.base_url, tag, path, decl, tmp_path)
    assert (result.deleted, result.not_ours, result.left, result.error) == (0, 1, 0, None)
    assert [s["notes"] for s in json_api.items("showings")] == ["someone else's viewing"]


def test_a_hook_cleans_up_and_must_count_what_is_left(json_api, tag, ledger_file, tmp_path):
    ids = [showing(json_api, f"{tag} viewing") for _ in range(3)]
    hook = tmp_path / "team_cleanup.py"
    hook.write_text(
        "def clean_up(context):\n"
        "    for entry in context.entities:\n"
        "        context.send('DELETE', f'/showings/{entry.id}')\n"
        "        context.mark_gone(entry)\n"
        "    left = [s for s in context.send('GET', '/showings').json() if context.is_ours(s['notes'])]\n"
        "    return {'deleted': len(context.entities), 'left': len(left)}\n"
        "def forgets(context):\n"
        "    return {'deleted': 0}\n"
    )
    path = ledger_file([LedgerEntry("showing", i) for i in ids], run_tag=tag, target=json_api.base_url)
    result = clean(json_api.base_url, tag, path, declaration({"hook": f"{hook}:clean_up"}), tmp_path)
    assert (result.deleted, result.left, result.proof, result.ok) == (3, 0, "hook", True)
    forgot = clean(json_api.base_url, tag, path, declaration({"hook": f"{hook}:forgets"}), tmp_path)
    assert forgot.left is None and "did not count what is left" in forgot.error


def test_a_bearer_token_from_the_environment(tag, tmp_path, monkeypatch):
    with FastCrmTarget(workdir=tmp_path, seed=0, seed_tagged=(tag, 5)) as target:
        token = httpx.post(f"{target.base_url}/auth/login", timeout=10,
                           json={"email": DEFAULT_ACCOUNTS["admin"], "password": PASSWORD}).json()["token"]
        crm_with_bearer = replace(stock_declaration(), auth=declaration(
            {"auth": {"bearer": {"env": "CRM_CLEANUP_TOKEN"}}, "kinds": {"x": {"delete": "DELETE /x/{id}"}}}).auth)
        ledger = tmp_path / "ledger.jsonl"
        ledger.write_bytes(encode_header(run_tag=tag, target=target.base_url, cleanup=None)
                           + encode_entries(LedgerEntry("escrow", str(i)) for i in range(1, 6)))
        monkeypatch.delenv("CRM_CLEANUP_TOKEN", raising=False)
        missing = clean(target.base_url, tag, ledger, crm_with_bearer, tmp_path)
        assert missing.left is None and "environment variable CRM_CLEANUP_TOKEN is not set" in missing.error
        monkeypatch.setenv("CRM_CLEANUP_TOKEN", token)
        done = clean(target.base_url, tag, ledger, crm_with_bearer, tmp_path)
        assert done.clean and (done.deleted, done.swept) == (10, 5)  # the listings carry the tag too: swept

        # the same token from an Airflow Connection (as Airflow reads one from the environment)
        from_connection = replace(crm_with_bearer, auth=declaration(
            {"auth": {"bearer": {"connection": "crm_cleanup"}}, "kinds": {"x": {"delete": "DELETE /x/{id}"}}}).auth)
        monkeypatch.setenv("AIRFLOW_CONN_CRM_CLEANUP", json.dumps({"conn_type": "http", "password": token}))
        fresh = tmp_path / "fresh-journal"
        fresh.mkdir()
        again = clean(target.base_url, tag, ledger, from_connection, fresh)
    assert again.clean and again.resumed == 0 and again.already_gone == 5  # authenticated; already gone
