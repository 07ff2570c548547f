"""The read-only journey (15 % of users): browse and search, page on, open what looks interesting.

Read-only users only ever GET (the target refuses them anything else).
"""

from __future__ import annotations

import random

from locust import SequentialTaskSet, task

from loadtests.journeys import data
from loadtests.journeys.base import CrmUser, check_entity, check_page

PAGE_SIZE = 20


def _browse_params(offset: int = 0) -> dict:
    params: dict = {"limit": PAGE_SIZE, "offset": offset}
    if random.random() < 0.6:  # most visits search for something; the rest just browse
        params["search"] = data.search_term()
    return params


class ReadonlyJourney(SequentialTaskSet):
    user: ReadonlyUser

    def on_start(self) -> None:
        self.listings: dict | None = None
        self.listing_ids: list[str] = []
        self.escrow_ids: list[str] = []

    @task
    def browse_listings(self) -> None:
        params = _browse_params()
        body = self.user.call("GET", "/listings", name="/listings", params=params, check=check_page)
        self.listing_ids = [str(i["id"]) for i in body["items"]] if body else []
        self.listings = {"params": params, "total": body["total"]} if body else None

    @task
    def listings_next_page(self) -> None:
        if not self.listings or self.listings["total"] <= PAGE_SIZE:
            return
        params = {**self.listings["params"], "offset": PAGE_SIZE}
        body = self.user.call("GET", "/listings", name="/listings", params=params, check=check_page)
        if body and body["items"]:
            self.listing_ids = [str(i["id"]) for i in body["items"]]

    @task
    def view_listing(self) -> None:
        if self.listing_ids:
            listing_id = random.choice(self.listing_ids)
            self.user.call(
                "GET", f"/listings/{listing_id}", name="/listings/{id}", check=check_entity(listing_id), may_be_gone=True,
            )

    @task
    def browse_escrows(self) -> None:
        body = self.user.call("GET", "/escrows", name="/escrows", params=_browse_params(), check=check_page)
        self.escrow_ids = [str(i["id"]) for i in body["items"]] if body else []

    @task
    def view_escrow(self) -> None:
        if self.escrow_ids:
            escrow_id = random.choice(self.escrow_ids)
            self.user.call(
                "GET", f"/escrows/{escrow_id}", name="/escrows/{id}", check=check_entity(escrow_id), may_be_gone=True,
            )


class ReadonlyUser(CrmUser):
    """A read-only seat (assistant, auditor) that looks but never changes anything."""

    journey = "readonly"
    tasks = [ReadonlyJourney]
