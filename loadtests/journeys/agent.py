"""The agent journey (60 % of users): dashboard, open an escrow, look at it.

The seed's agent workflow: view the dashboard (escrows, then listings), create
an escrow with varied data, then open it by id. Think time between the steps
is the plan's ``think_time_s`` (the plugin sets the user's ``wait_time``).
"""

from __future__ import annotations

from locust import SequentialTaskSet, task

from stampede.loadtests.journeys import data
from stampede.loadtests.journeys.base import CrmUser, check_entity, check_page

DASHBOARD_LIMIT = 20


class AgentJourney(SequentialTaskSet):
    user: AgentUser

    def on_start(self) -> None:
        self.escrow_id: str | None = None

    @task
    def dashboard_escrows(self) -> None:
        self.escrow_id = None
        self.user.call("GET", "/escrows", name="/escrows", params={"limit": DASHBOARD_LIMIT}, check=check_page)

    @task
    def dashboard_listings(self) -> None:
        self.user.call("GET", "/listings", name="/listings", params={"limit": DASHBOARD_LIMIT}, check=check_page)

    @task
    def create_escrow(self) -> None:
        escrow = data.new_escrow(self.user.run_tag)
        body = self.user.call(
            "POST", "/escrows", name="/escrows", json=escrow, expect=201,
            check=check_entity(property_address=escrow["property_address"]),
        )
        if body is not None:
            self.escrow_id = str(body["id"])
            self.user.created("escrow", self.escrow_id, f"/escrows/{self.escrow_id}")

    @task
    def view_escrow(self) -> None:
        if self.escrow_id is None:
            return
        escrow_id, self.escrow_id = self.escrow_id, None
        self.user.call("GET", f"/escrows/{escrow_id}", name="/escrows/{id}", check=check_entity(escrow_id))
        CrmUser.finished_escrows.append(escrow_id)


class AgentUser(CrmUser):
    """An agent working their pipeline of escrows."""

    journey = "agent"
    tasks = [AgentJourney]
