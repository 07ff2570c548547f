"""The reaper deletes only entities carrying a run tag Stampede issued and that has ended, as a whole token.

Look-alike tags, a Lithuanian postcode (``LT-01103``), a tag of a run still
going and a tag Stampede never issued all survive; production is never asked.
"""

from __future__ import annotations

import json
import os

import httpx
import pytest

from stampede.cleanup.api import Credentials
from stampede.cleanup.ledger import LedgerEntry, encode_entries, encode_header
from stampede.cleanup.reaper import issued_tag_matcher, reap_target
from stampede.infra.canary import Canary
from stampede.loadtests.journeys import data
from stampede.plan.cleanup_declaration import parse_cleanup, stock_declaration
from stampede.plan.run_plan import DEFAULT_ACCOUNTS
from stampede.state import db, tags

PASSWORD = os.environ["STAMPEDE_TARGET_PASSWORD"]
CREDENTIALS = Credentials(password=PASSWORD, accounts=dict(DEFAULT_ACCOUNTS))
POSTCODE = "Gedimino pr. 9, LT-01103 Vilnius"


@pytest.mark.parametrize(("text", "found"), [
    pytest.param("LT-deadrun1-k3f9 12 Elm St", "LT-deadrun1", id="tagged"),
    pytest.param("12 Elm St (LT-deadrun1)", "LT-deadrun1", id="in-brackets"),
    pytest.param("LT-deadrun1x-k3f9 12 Elm St", None, id="longer-tag"),
    pytest.param("XLT-deadrun1 12 Elm St", None, id="glued"),
    pytest.param(POSTCODE, None, id="postcode"),
    pytest.param("12 Elm St", None, id="untagged"),
])
def test_only_an_issued_tag_as_a_whole_token_matches(text, found):
    match = issued_tag_matcher({"LT-deadrun1", "LT-other2"}).search(text)
    assert (match.group(0) if match else None) == found
    assert issued_tag_matcher(set()) is None  # no tags: nothing can ever match


@pytest.mark.integration
def test_reaps_issued_ended_tags_only_and_is_idempotent(cleanup_target, crm):
    client = crm(cleanup_target, "broker")
    dead, alive, never = "LT-deadrun1", "LT-liverun2", "LT-neverissued3"

    def create(kind: str, address: str) -> None:
        body = ({"property_address": address, "closing_date": data.closing_date(), "purchase_price": data.price()}
                if kind == "escrows" else {"address": address, "list_price": data.price(), "status": "active"})
        assert client.post(f"/{kind}", json=body).status_code == 201

    for kind in ("escrows", "listings"):
        for _ in range(3):
            create(kind, data.tagged_address(dead))
        for address in (data.tagged_address(alive), data.tagged_address(never), data.tagged_address(f"{dead}x"),
                        POSTCODE, "9 Untagged Lane"):
            create(kind, address)

    def addresses() -> list[str]:
        return sorted([e["property_address"] for e in client.get("/escrows", params={"limit": 100}).json()["items"]]
                      + [e["address"] for e in client.get("/listings", params={"limit": 100}).json()["items"]])

    before = addresses()
    first = reap_target(base_url=cleanup_target.base_url, declaration=stock_declaration(), tags={dead},
                        credentials=CREDENTIALS)
    assert (first.found, first.deleted, first.left, first.errors) == (6, 6, 0, [])
    assert first.by_tag == {dead: 6} and first.ok and first.lookalikes >= 8  # 4 look-alikes of each kind
    after = addresses()
    assert sorted(set(before) - set(after)) == sorted(a for a in before if a.startswith(f"{dead}-"))
    assert sum(POSTCODE == a for a in after) == 2 and sum(a.startswith(f"{dead}x-") for a in after) == 2

    again = reap_target(base_url=cleanup_target.base_url, declaration=stock_declaration(), tags={dead},
                        credentials=CREDENTIALS)
    assert (again.found, again.deleted, again.left) == (0, 0, 0)
    nothing = reap_target(base_url=cleanup_target.base_url, declaration=stock_declaration(), tags=set(),
                          credentials=CREDENTIALS)
    assert nothing.ok and nothing.found == 0 and addresses() == after


@pytest.mark.integration
def test_the_reaper_step_resumes_unproved_runs_from_their_ledgers_and_never_touches_production(
        json_api, tmp_path, monkeypatch):
    """A team's run on json-server whose cleanup never ran: the reaper finishes it from its run folder."""
    from stampede.steps.reap import ReapFailed, reap_everything

    monkeypatch.setenv("STAMPEDE_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("STAMPEDE_STATE_URL", f"sqlite:///{tmp_path / 'state.sqlite'}")
    db.dispose_all()
    try:
        ended, running = "LT-teamrun1", "LT-teamrun2"
        tags.issue(ended, run_id="teamrun1", target=json_api.base_url)
        tags.end(ended)
        tags.issue(running, run_id="teamrun2", target=json_api.base_url)
        with httpx.Client(base_url=json_api.base_url, timeout=10, trust_env=False) as client:
            def showing(notes: str) -> int:
                return client.post("/showings", json={"notes": notes}).json()["id"]

            recorded = [showing(f"{ended} viewing {i}") for i in range(4)]
            unrecorded = showing(f"{ended} viewing, created as its worker died")
            kept = [showing(f"{running} viewing"), showing(f"{ended}x viewing"), showing(POSTCODE),
                    showing("LT-neverissued3 viewing")]
        declaration = parse_cleanup({"kinds": {"showing": {
            "delete": "DELETE /showings/{id}", "search": {"request": "GET /showings?q={run_tag}"}}}},
            lambda f, p, x: ValueError(f"{f}: {p}"), source="team.yaml")
        folder = tmp_path / "reports" / ended
        folder.mkdir(parents=True)
        (folder / "ledger.jsonl").write_bytes(
            encode_header(run_tag=ended, target=json_api.base_url, cleanup=declaration.to_dict())
            + encode_entries(LedgerEntry("showing", str(i), f"/showings/{i}") for i in recorded))
        environments = json.dumps({"environments": {"local": {"allow_load": True}}})
        with Canary() as production:
            production_env = json.dumps({"environments": {
                "local": {"allow_load": True},
                "production": {"allow_load": False, "base_urls": [production.base_url.replace("127.0.0.1", "localhost")]},
            }})
            with pytest.raises(ReapFailed, match="belongs to production"):
                reap_everything(older_than_s=0, extra_targets=[production.base_url.replace("127.0.0.1", "localhost")],
                                environments_text=production_env)
            assert production.hits() == 0

        outcome = reap_everything(older_than_s=0, environments_text=environments)
        assert outcome["runs"][ended]["ok"] and outcome["runs"][ended]["deleted"] == 5  # 4 recorded, 1 swept
        assert outcome["targets"][json_api.base_url]["ok"]
        cleanup = json.loads((folder / "cleanup.json").read_text())
        assert (cleanup["left"], cleanup["swept"], cleanup["ok"]) == (0, 1, True)  # the unrecorded one too
        assert sorted(s["id"] for s in json_api.items("showings")) == sorted(kept)
        assert unrecorded not in [s["id"] for s in json_api.items("showings")]

        assert reap_everything(older_than_s=3600, environments_text=environments)["tags"] == 0  # ended just now
    finally:
        db.dispose_all()
