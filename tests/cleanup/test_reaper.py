"""The reaper deletes stale ``LT-``-tagged data of any run, and nothing else: not young data, not an active run's."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import httpx
import pytest

from stampede.cleanup.reaper import _registry_time, reap_all_targets, reap_stale_test_data, tag_of
from stampede.infra.canary import Canary
from stampede.infra.demo_target.server import DemoTarget
from stampede.loadtests.journeys import data
from stampede.plan.run_plan import DEFAULT_ACCOUNTS

ADMIN = DEFAULT_ACCOUNTS["admin"]


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    with DemoTarget(workdir=tmp_path_factory.mktemp("reaper-target")) as demo:
        yield demo


def _client(target) -> httpx.Client:
    client = httpx.Client(base_url=target.base_url, follow_redirects=False, timeout=10, trust_env=False)
    token = client.post("/auth/login", json={"email": ADMIN, "password": target.password}).json()["token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return client


def _create(client: httpx.Client, kind: str, address: str) -> None:
    body = (
        {"property_address": address, "closing_date": data.closing_date(), "purchase_price": data.price()}
        if kind == "escrows" else {"address": address, "list_price": data.price(), "status": "active"}
    )
    assert client.post(f"/{kind}", json=body).status_code == 201


def _addresses(client: httpx.Client) -> list[str]:
    escrows = client.get("/escrows", params={"limit": 100}).json()["items"]
    listings = client.get("/listings", params={"limit": 100}).json()["items"]
    return sorted([e["property_address"] for e in escrows] + [item["address"] for item in listings])


@pytest.mark.parametrize(
    ("text", "tag"),
    [
        pytest.param("12 Elm St LT-nightly20260101 #3", "LT-nightly20260101", id="tagged"),
        pytest.param("12 BOLT-Main St", None, id="inside-a-word"),
        pytest.param("12 Elm St", None, id="untagged"),
    ],
)
def test_tag_of(text, tag):
    assert tag_of(text) == tag


@pytest.mark.integration
def test_reaps_stale_tagged_data_only_and_is_idempotent(target):
    client = _client(target)
    try:
        for kind in ("escrows", "listings"):
            for _ in range(3):
                _create(client, kind, data.tagged_address("LT-deadrun1"))
            _create(client, kind, data.tagged_address("LT-liverun2"))
        _create(client, "escrows", "7 BOLT-Upton Road")  # looks tagged to a loose search: never touched
        _create(client, "listings", "9 Untagged Lane")
        before = _addresses(client)
        kwargs = {"base_url": target.base_url, "email": ADMIN, "password": target.password, "older_than_s": 3600}

        young = reap_stale_test_data(**kwargs)
        assert (young.found, young.deleted, young.kept_recent, young.left) == (0, 0, 8, 0)
        assert _addresses(client) == before

        later = datetime.now(timezone.utc) + timedelta(hours=2)  # every entity is now two hours old
        stale = reap_stale_test_data(**kwargs, now=later, active_tags={"LT-liverun2"})
        assert (stale.found, stale.deleted, stale.left, stale.kept_active) == (6, 6, 0, 2)
        assert stale.tags == {"LT-deadrun1": 6} and stale.ok
        again = reap_stale_test_data(**kwargs, now=later, active_tags={"LT-liverun2"})
        assert (again.found, again.deleted, again.left) == (0, 0, 0)

        last = reap_stale_test_data(**kwargs, now=later)
        assert last.deleted == 2 and last.left == 0
        assert _addresses(client) == ["7 BOLT-Upton Road", "9 Untagged Lane"]
    finally:
        client.close()


def test_age_from_the_run_registry_when_the_target_has_no_created_at(tmp_path):
    (tmp_path / "LT-abc").mkdir()
    (tmp_path / "LT-abc" / "results.json").write_text(json.dumps({"started_at": "2026-01-02T03:04:05+00:00"}))
    (tmp_path / "LT-nofile").mkdir()
    assert _registry_time(tmp_path, "LT-abc") == datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    assert _registry_time(tmp_path, "LT-nofile") is not None  # the folder's time
    assert _registry_time(tmp_path, "LT-unknown") is None  # unknown age: left alone


def test_the_reaper_never_touches_production(tmp_path):
    with Canary() as canary:
        production = canary.base_url.replace("127.0.0.1", "localhost")
        environments = json.dumps({"environments": {"production": {"allow_load": False, "base_urls": [production]}}})
        outcome = reap_all_targets(
            older_than_s=0, extra_targets=[production, canary.base_url], environments_text=environments,
            password=os.environ["STAMPEDE_TARGET_PASSWORD"], email=ADMIN, reports_dir=tmp_path,
        )
        assert canary.hits() == 0
        assert not outcome[production]["ok"] and "belongs to production" in outcome[production]["errors"][0]
        assert "an address of localhost in production" in outcome[canary.base_url]["errors"][0]
