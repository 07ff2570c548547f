"""The admin journey (5 % of users): large pages, offset paging, details, housekeeping deletes.

The admin lists with a large page size and pages on by offset (the heaviest
list queries of the mix), opens details, and deletes one escrow that an agent
of this run created and has finished with: never anything else.
"""

from __future__ import annotations

import random

from locust import SequentialTaskSet, task

from stampede.loadtests.journeys.base import CrmUser

LARGE_PAGE = 100  # the target API's largest page (the demo target caps limit at 100)


class AdminJourney(SequentialTaskSet):
    user: AdminUser

    def on_start(self) -> None:
        self.escrow_ids: list[str] = []
        self.escrows_total = 0
        self.listing_ids: list[str] = []

    @task
    def list_escrows(self) -> None:
        self.escrow_ids, body = self.user.list_page("escrows", {"limit": LARGE_PAGE, "offset": 0})
        self.escrows_total = body["total"] if body else 0

    @task
    def list_escrows_by_offset(self) -> None:
        pages = -(-self.escrows_total // LARGE_PAGE)
        if pages < 2:
            return
        offset = random.randint(1, pages - 1) * LARGE_PAGE
        ids, _ = self.user.list_page("escrows", {"limit": LARGE_PAGE, "offset": offset})
        if ids:
            self.escrow_ids = ids

    @task
    def view_escrow(self) -> None:
        self.user.view_one_of("escrows", self.escrow_ids)

    @task
    def list_listings(self) -> None:
        self.listing_ids, _ = self.user.list_page("listings", {"limit": LARGE_PAGE, "offset": 0})

    @task
    def view_listing(self) -> None:
        self.user.view_one_of("listings", self.listing_ids)

    @task
    def delete_finished_escrow(self) -> None:
        if not CrmUser.finished_escrows:
            return
        escrow_id = CrmUser.finished_escrows.popleft()
        if self.user.call("DELETE", f"/escrows/{escrow_id}", name="/escrows/{id}", expect=204) is not None:
            self.user.deleted("escrow", escrow_id)


class AdminUser(CrmUser):
    """An office administrator reviewing and tidying the books."""

    journey = "admin"
    tasks = [AdminJourney]
