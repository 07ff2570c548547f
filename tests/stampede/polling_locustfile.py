"""The simplest user, for tests with a known target: poll ``GET /escrows`` with no checks.

Scenarios in the tests point their ``locustfile`` here (an absolute path).
"""

from locust import task
from locust.contrib.fasthttp import FastHttpUser


class PollingUser(FastHttpUser):
    @task
    def poll(self):
        self.client.get("/escrows", name="/escrows")
