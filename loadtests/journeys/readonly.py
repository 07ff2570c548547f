"""The read-only journey (15 % of users): browse and search, page on, open what looks interesting.

Read-only users only ever GET (the target refuses them anything else).
"""

from __future__ import annotations

import random

from locust import SequentialTaskSet, task

from stampede.loadtests.journeys import data
from stampede.loadtests.journeys.base import CrmUser

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
        self.listing_ids, body = self.user.list_page("listings", params)
        self.listings = {"params": params, "total": body["total"]} if body else None

    @task
    def listings_next_page(self) -> None:
        if not self.listings or self.listings["total"] <= PAGE_SIZE:
            return
        params = {**self.listings["params"], "offset": PAGE_SIZE}
        ids, _ = self.user.list_page("listings", params)
        if ids:
            self.listing_ids = ids

    @task
    def view_listing(self) -> None:
        self.user.view_one_of("listings", self.listing_ids)

    @task
    def browse_escrows(self) -> None:
        self.escrow_ids, _ = self.user.list_page("escrows", _browse_params())

    @task
    def view_escrow(self) -> None:
        self.user.view_one_of("escrows", self.escrow_ids)


class ReadonlyUser(CrmUser):
    """A read-only seat (assistant, auditor) that looks but never changes anything."""

    journey = "readonly"
    tasks = [ReadonlyJourney]
