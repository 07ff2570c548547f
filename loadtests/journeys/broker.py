"""The broker journey (20 % of users): search listings, list a property, move its status, review escrows.

Think time between the steps is the plan's ``think_time_s``.
"""

from __future__ import annotations

import random

from locust import SequentialTaskSet, task

from stampede.loadtests.journeys import data
from stampede.loadtests.journeys.base import CrmUser, check_entity, check_page

PAGE_SIZE = 20


class BrokerJourney(SequentialTaskSet):
    user: BrokerUser

    def on_start(self) -> None:
        self.listing: dict | None = None
        self.escrows_total = 0

    @task
    def search_listings(self) -> None:
        self.user.call(
            "GET", "/listings", name="/listings",
            params={"search": data.search_term(), "limit": PAGE_SIZE, "offset": 0}, check=check_page,
        )

    @task
    def create_listing(self) -> None:
        self.listing = None
        listing = data.new_listing(self.user.run_tag)
        body = self.user.call(
            "POST", "/listings", name="/listings", json=listing, expect=201,
            check=check_entity(address=listing["address"]),
        )
        if body is not None:
            self.listing = {"id": str(body["id"]), "status": body.get("status", listing["status"])}
            self.user.created("listing", self.listing["id"], f"/listings/{self.listing['id']}")

    @task
    def update_listing_status(self) -> None:
        if self.listing is None:
            return
        listing, self.listing = self.listing, None
        status = data.next_status(listing["status"])
        self.user.call(
            "PATCH", f"/listings/{listing['id']}", name="/listings/{id}", json={"status": status},
            check=check_entity(listing["id"], status=status),
        )

    @task
    def review_escrows(self) -> None:
        body = self.user.call(
            "GET", "/escrows", name="/escrows", params={"limit": PAGE_SIZE, "offset": 0}, check=check_page,
        )
        self.escrows_total = body["total"] if body else 0

    @task
    def review_escrows_next_page(self) -> None:
        pages = -(-self.escrows_total // PAGE_SIZE)
        if pages < 2:
            return
        page = random.randint(1, min(pages - 1, 10))  # people page forward a few times, not to page 900
        self.user.call(
            "GET", "/escrows", name="/escrows", params={"limit": PAGE_SIZE, "offset": page * PAGE_SIZE},
            check=check_page,
        )


class BrokerUser(CrmUser):
    """A broker managing the office's listings."""

    journey = "broker"
    tasks = [BrokerJourney]
