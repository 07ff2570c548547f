"""The admin journey (5 % of users): large pages, offset paging, details, housekeeping deletes.

The admin lists with a large page size and pages on by offset (the heaviest
list queries of the mix), opens details, and deletes one escrow that an agent
of this run created and has finished with: never anything else.
"""

from __future__ import annotations

import random

from locust import SequentialTaskSet, task

from loadtests.journeys.base import CrmUser, check_entity, check_page

LARGE_PAGE = 100  # the target API's largest page (the demo target caps limit at 100)


class AdminJourney(SequentialTaskSet):
    user: AdminUser

    def on_start(self) -> None:
        self.escrow_ids: list[str] = []
        self.escrows_total = 0
        self.listing_ids: list[str] = []

    @task
    def list_escrows(self) -> None:
        body = self.user.call(
            "GET", "/escrows", name="/escrows", params={"limit": LARGE_PAGE, "offset": 0}, check=check_page,
        )
        self.escrow_ids = [str(i["id"]) for i in body["items"]] if body else []
        self.escrows_total = body["total"] if body else 0

    @task
    def list_escrows_by_offset(self) -> None:
        pages = -(-self.escrows_total // LARGE_PAGE)
        if pages < 2:
            return
        offset = random.randint(1, pages - 1) * LARGE_PAGE
        body = self.user.call(
            "GET", "/escrows", name="/escrows", params={"limit": LARGE_PAGE, "offset": offset}, check=check_page,
        )
        if body and body["items"]:
            self.escrow_ids = [str(i["id"]) for i in body["items"]]

    @task
    def view_escrow(self) -> None:
        if self.escrow_ids:
            escrow_id = random.choice(self.escrow_ids)
            self.user.call(
                "GET", f"/escrows/{escrow_id}", name="/escrows/{id}", check=check_entity(escrow_id), may_be_gone=True,
            )

    @task
    def list_listings(self) -> None:
        body = self.user.call(
            "GET", "/listings", name="/listings", params={"limit": LARGE_PAGE, "offset": 0}, check=check_page,
        )
        self.listing_ids = [str(i["id"]) for i in body["items"]] if body else []

    @task
    def view_listing(self) -> None:
        if self.listing_ids:
            listing_id = random.choice(self.listing_ids)
            self.user.call(
                "GET", f"/listings/{listing_id}", name="/listings/{id}", check=check_entity(listing_id), may_be_gone=True,
            )

    @task
    def delete_finished_escrow(self) -> None:
        if not CrmUser.finished_escrows:
            return
        escrow_id = CrmUser.finished_escrows.popleft()
        self.user.call("DELETE", f"/escrows/{escrow_id}", name="/escrows/{id}", expect=204)


class AdminUser(CrmUser):
    """An office administrator reviewing and tidying the books."""

    journey = "admin"
    tasks = [AdminJourney]
