"""The stock journeys drive the demo target through the Stampede plugin, in a real Locust process.

One short run (8 users, the four journeys, one 9-second stage) is shared by the
tests of this module; each test checks one promise of the journeys.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from stampede.cleanup.api import Credentials
from stampede.cleanup.ledger import read_ledger
from stampede.cleanup.run_data import clean_run
from stampede.loadtests.journeys import data
from stampede.plan.cleanup_declaration import stock_declaration
from stampede.plan.run_plan import DEFAULT_ACCOUNTS, PASSWORD_ENV
from stampede.plan.target import parse_target, resolve

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "stampede" / "load" / "entry.py"
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
CLASSES = ("AgentUser", "BrokerUser", "AdminUser", "ReadonlyUser")
STAGE_S = 9
LOCUST_TIMEOUT_S = 90  # the backstop: a stage shape makes Locust ignore --run-time

JOURNEY_ENDPOINTS = {
    "agent": {"POST /auth/login", "GET /escrows", "GET /listings", "POST /escrows", "GET /escrows/{id}"},
    "broker": {"POST /auth/login", "GET /listings", "POST /listings", "PATCH /listings/{id}", "GET /escrows"},
    "admin": {"POST /auth/login", "GET /escrows", "GET /escrows/{id}", "GET /listings", "GET /listings/{id}",
              "DELETE /escrows/{id}"},
    "readonly": {"POST /auth/login", "GET /listings", "GET /listings/{id}", "GET /escrows", "GET /escrows/{id}"},
}


def run_locust(
    target, tmp_path: Path, *, run_tag: str, users: int, spawn_rate: float, duration_s: int, password: str | None,
    locustfile: Path = LOCUSTFILE, classes: tuple[str, ...] = CLASSES,
) -> dict[str, Any]:
    """Run the stock locustfile with the plugin; the plugin's output, Locust's own stats and the logs."""
    plan = {
        "run_id": run_tag.removeprefix("LT-"),
        "run_tag": run_tag,
        "target": target.base_url,
        "journeys": {"agent": 1, "broker": 1, "admin": 1, "readonly": 1},
        "think_time_s": [0.1, 0.5],
        "accounts": dict(DEFAULT_ACCOUNTS),
        "password_env": PASSWORD_ENV,
        "stages": [{"name": "journeys", "scenario": "test", "users": users, "spawn_rate": spawn_rate,
                    "duration_s": duration_s, "thresholds": {}, "abort": False}],
        "progress_interval_s": 2,
        # what preflight would approve: the load processes may reach the target only (stampede.load.egress)
        "egress": resolve(parse_target(target.base_url)).egress_policy(),
        "cleanup": stock_declaration().to_dict(),
    }
    out, stats, ledger = tmp_path / "stampede.json", tmp_path / "locust", tmp_path / "ledger.jsonl"
    env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
    if password is not None:
        env[PASSWORD_ENV] = password
    process = subprocess.run(
        [
            sys.executable, "-m", "locust", "-f", f"{PLUGIN},{locustfile}", "--headless",
            "--host", target.base_url, "--stampede-plan", json.dumps(plan), "--stampede-out", str(out),
            "--stampede-ledger", str(ledger), "--json-file", str(stats), "--exit-code-on-error", "0", *classes,
        ],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=LOCUST_TIMEOUT_S,
    )
    logs = process.stdout + process.stderr
    assert process.returncode == 0, logs[-3000:]
    return {
        "out": json.loads(out.read_text()),
        "out_text": out.read_text(),
        "stats": {f"{s['method']} {s['name']}": s for s in json.loads((tmp_path / "locust.json").read_text())},
        "logs": logs,
        "ledger": ledger,
    }


def phase_endpoints(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"GET /escrows": {"requests": n, "failures": m, "errors": Counter}}`` summed over the run's stages and phases."""
    totals: dict[str, dict[str, int]] = {}
    for endpoints in out["phases"].values():
        for endpoint, slot in endpoints.items():
            total = totals.setdefault(endpoint, {"requests": 0, "failures": 0, "errors": Counter()})
            total["requests"] += sum(slot["histogram"].values())
            total["failures"] += slot["failures"]
            total["errors"].update(slot.get("errors", {}))
    return totals


@pytest.fixture(scope="module")
def run(journeys_target, tmp_path_factory) -> dict[str, Any]:
    run_tag = f"LT-journeys{uuid.uuid4().hex[:8]}"
    result = run_locust(
        journeys_target, tmp_path_factory.mktemp("journeys"), run_tag=run_tag, users=8, spawn_rate=4,
        duration_s=STAGE_S, password=journeys_target.password,
    )
    return {**result, "run_tag": run_tag, "target": journeys_target}


@pytest.fixture(scope="module")
def admin(run) -> httpx.Client:
    target = run["target"]
    with httpx.Client(base_url=target.base_url, follow_redirects=False, timeout=10, trust_env=False) as client:
        login = client.post("/auth/login", json={"email": DEFAULT_ACCOUNTS["admin"], "password": target.password})
        client.headers["Authorization"] = f"Bearer {login.json()['token']}"
        yield client


@pytest.mark.parametrize("journey", sorted(JOURNEY_ENDPOINTS))
def test_every_journey_step_sent_requests(run, journey: str) -> None:
    endpoints = phase_endpoints(run["out"])
    missing = {e for e in JOURNEY_ENDPOINTS[journey] if endpoints.get(e, {}).get("requests", 0) == 0}
    assert not missing, f"{journey}: no requests for {sorted(missing)}; got {sorted(endpoints)}"


def test_requests_are_named_by_route_template(run) -> None:
    assert set(run["stats"]) - {"Aggregated"} <= set().union(*JOURNEY_ENDPOINTS.values())


def test_the_load_has_no_failures(run) -> None:
    stats = {name: s for name, s in run["stats"].items() if name != "Aggregated"}
    assert sum(s["num_requests"] for s in stats.values()) > 100
    assert {name: s["num_failures"] for name, s in stats.items() if s["num_failures"]} == {}


def test_created_entities_are_counted_and_exist_on_the_target_with_the_run_tag(run, admin) -> None:
    created, run_tag = run["out"]["created"], run["run_tag"]
    assert created.get("escrow", 0) > 0 and created.get("listing", 0) > 0
    deleted = run["stats"]["DELETE /escrows/{id}"]["num_requests"] - run["stats"]["DELETE /escrows/{id}"]["num_failures"]
    assert deleted > 0, "the admin journey deletes the run's finished escrows"
    for kind, field, expected in (
        ("escrows", "property_address", created["escrow"] - deleted),
        ("listings", "address", created["listing"]),
    ):
        page = admin.get(f"/{kind}", params={"search": run_tag, "limit": 100}).json()
        assert page["total"] == expected, kind
        assert all(item[field].startswith(f"{run_tag}-") for item in page["items"])


def test_created_data_varies(run, admin) -> None:
    escrows = admin.get("/escrows", params={"search": run["run_tag"], "limit": 100}).json()["items"]
    assert len({e["property_address"].split(" ", 1)[1] for e in escrows}) > 1  # street and city vary
    assert len({e["purchase_price"] for e in escrows}) > 1
    assert all(data.PRICE_MIN <= e["purchase_price"] <= data.PRICE_MAX for e in escrows)
    listings = admin.get("/listings", params={"search": run["run_tag"], "limit": 100}).json()["items"]
    assert all(listing["status"] in data.LISTING_STATUSES for listing in listings)


def test_the_password_appears_nowhere_in_the_output(run) -> None:
    password = run["target"].password
    assert password not in run["logs"]
    assert password not in run["out_text"]


def test_every_created_entity_is_in_the_ledger_with_its_id(run, admin) -> None:
    ledger = read_ledger([run["ledger"]])
    assert ledger.run_tag == run["run_tag"] and ledger.counted == {} and ledger.torn_lines == 0
    assert ledger.kinds() == run["out"]["created"]  # every creation recorded, as it was counted
    deleted = run["stats"]["DELETE /escrows/{id}"]["num_requests"] - run["stats"]["DELETE /escrows/{id}"]["num_failures"]
    assert len(ledger.deleted_by_run) <= deleted  # the admin's own deletes (an id it freed may be reused)
    for entry in ledger.entities.values():  # what the run left: there, and carrying its tag
        response = admin.get(entry.url)
        assert response.status_code == 200 and run["run_tag"] in response.text, entry


def test_cleanup_deletes_everything_the_journeys_left(run, tmp_path) -> None:
    ledger = read_ledger([run["ledger"]])
    result = clean_run(
        base_url=run["target"].base_url, run_tag=run["run_tag"], declaration=stock_declaration(),
        ledger=ledger, journal_path=tmp_path / "journal.jsonl",
        credentials=Credentials(password=run["target"].password, accounts=dict(DEFAULT_ACCOUNTS)),
    )
    assert result.error is None and result.left == 0 and result.clean and result.proof == "search"
    assert result.created == sum(run["out"]["created"].values())
    assert result.deleted == len(ledger.entities) and result.swept == 0
    assert result.already_gone == len(ledger.deleted_by_run)


def test_every_request_is_counted_in_a_stage(run) -> None:
    """The plugin's stage statistics hold every request Locust made (its own stats are the reference)."""
    counted = sum(e["requests"] for e in phase_endpoints(run["out"]).values())
    sent = run["stats"]["Aggregated"]["num_requests"] if "Aggregated" in run["stats"] else sum(
        s["num_requests"] for s in run["stats"].values())
    assert counted == sent


def test_without_the_password_no_user_can_log_in_and_nothing_is_created(journeys_target, tmp_path) -> None:
    result = run_locust(
        journeys_target, tmp_path, run_tag=f"LT-nopw{uuid.uuid4().hex[:8]}", users=4, spawn_rate=4, duration_s=3,
        password=None,
    )
    assert set(result["stats"]) - {"Aggregated"} == {"POST /auth/login"}
    login = result["stats"]["POST /auth/login"]
    assert login["num_requests"] == login["num_failures"] > 0
    assert f"the password variable {PASSWORD_ENV} is not set" in result["logs"]
    assert result["out"]["created"] == {}


PROBE_LOCUSTFILE = """
import time

from locust import task

from stampede.loadtests.journeys.base import CrmUser, check_page


class ProbeUser(CrmUser):
    journey = "admin"  # logs in with the admin account

    @task
    def probe(self):
        if getattr(self, "probed", False):
            return
        self.probed = True
        time.sleep(1.5)  # past the first second of the stage (see test_every_request_is_counted_in_a_stage)
        self.call("GET", "/escrows", name="fresh", check=check_page)
        self.token = "expired-or-revoked"
        self.call("GET", "/escrows", name="after-401", check=check_page)
        self.call("GET", "/escrows/", name="redirect", check=check_page)
        self.call("GET", "/escrows", name="wrong-shape", check=lambda body: "not what I wanted")
        self.call("GET", "/escrows/999999999", name="gone", may_be_gone=True)
        self.call("GET", "/escrows/999999999", name="missing")
"""


def test_crm_user_logs_in_again_on_401_and_fails_redirects_and_wrong_bodies(journeys_target, tmp_path) -> None:
    locustfile = tmp_path / "probe_locustfile.py"
    locustfile.write_text(PROBE_LOCUSTFILE)
    result = run_locust(
        journeys_target, tmp_path, run_tag=f"LT-probe{uuid.uuid4().hex[:8]}", users=1, spawn_rate=1, duration_s=4,
        password=journeys_target.password, locustfile=locustfile, classes=("ProbeUser",),
    )
    # a request can land in either phase of the stage (a slow login moves it): sum over phases,
    # never keep one phase's slot
    endpoints = phase_endpoints(result["out"])

    def outcome(name: str) -> tuple[int, int, dict[str, int]]:
        slot = endpoints[f"GET {name}"]
        return slot["requests"], slot["failures"], dict(slot["errors"])

    assert outcome("fresh") == (1, 0, {})
    assert outcome("after-401") == (2, 1, {"CatchResponseError: HTTP 401: token refused, logging in again": 1})
    assert result["stats"]["POST /auth/login"]["num_requests"] == 2
    assert result["stats"]["POST /auth/login"]["num_failures"] == 0
    assert outcome("redirect") == (1, 1, {"CatchResponseError: HTTP 307: redirect not followed": 1})
    assert outcome("wrong-shape") == (1, 1, {"CatchResponseError: HTTP 200: not what I wanted": 1})
    assert outcome("gone") == (1, 0, {})
    assert outcome("missing") == (1, 1, {"CatchResponseError: HTTP 404 (expected 200)": 1})
