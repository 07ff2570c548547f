"""A team's own locustfile, as a team already has one: plain Locust, no Stampede import.

It tags what it creates with the run tag Stampede hands every load process in
``STAMPEDE_RUN_TAG`` (``LT-local`` when run by hand), and nothing else: which
requests create what, and how to remove it, is declared in the scenario.
"""

import os
import random

from locust import HttpUser, between, task

RUN_TAG = os.environ.get("STAMPEDE_RUN_TAG", "LT-local")


class ShowingUser(HttpUser):
    wait_time = between(0.05, 0.2)

    @task(3)
    def book_a_showing(self):
        self.client.post("/showings", json={
            "listing": random.randint(1, 50), "when": "2027-01-15T10:00", "notes": f"{RUN_TAG} first viewing",
        })

    @task(1)
    def browse(self):
        self.client.get("/showings", params={"_limit": 10}, name="/showings?_limit")
