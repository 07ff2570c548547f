"""``CrmUser``: the shared base of the stock CRM journeys (login, token, checked requests).

A journey user logs in once with its role's account, keeps the bearer token and
logs in again once when a request comes back 401. Every request:

- is named by its route template (``/escrows/{id}``), so endpoints aggregate;
- is judged on status *and* body shape: a 200/201 whose body is not what the
  target API promises counts as a failure;
- never follows a redirect: a 3xx is a failure, so a misconfigured target can
  never bounce the load to another host;
- goes through ``JourneyHttpClient`` (one keep-alive connection per user), not
  ``FastHttpSession``: the same timings and events for well under the CPU (see
  ``stampede.loadtests.journeys.http``), so a generator holds more users honestly.

The run plan (``stampede.load.plugin.plan_of``) supplies the run tag, the
accounts and the *name* of the environment variable that holds the password;
the password itself is read from the environment and never logged.
"""

from __future__ import annotations

import logging
import os
import random
from collections import deque
from typing import Any, Callable, ClassVar

from locust import User
from locust.exception import CatchResponseError, RescheduleTask

from stampede.loadtests.journeys.http import JourneyHttpClient, JourneyResponse

from stampede.load.plugin import mark_created, mark_deleted, plan_of
from stampede.load.process_env import RUN_TAG_ENV

from stampede.plan.run_plan import DEFAULT_ACCOUNTS, PASSWORD_ENV

logger = logging.getLogger("stampede.journeys")

# A run tag for a plain ``locust -f loadtests/locustfile.py`` without a plan or STAMPEDE_RUN_TAG:
# still tagged, so a search for ``LT-adhoc`` finds the data.
ADHOC_RUN_TAG = "LT-adhoc"

Check = Callable[[Any], "str | None"]  # body -> problem, or None when the body is as expected


class CrmUser(User):
    """Base of the CRM journeys: one logged-in user of one role driving the target API.

    Subclasses set ``journey`` (the key in the plan's journey weights and
    accounts) and ``tasks``. ``self.client`` is the user's ``JourneyHttpClient``.
    """

    abstract = True
    journey: ClassVar[str] = ""
    connection_timeout = 10.0
    network_timeout = 30.0

    # Escrows this process's agents created and have finished with: the admin
    # journey deletes only these, so it never touches data that is not the run's
    # and never deletes an escrow another user is still looking at. Bounded: the oldest drop
    # out (the ledger still has them for cleanup). At 10,000 it took ~20 minutes of the
    # memory bench to fill (~0.9 MiB: most of the worker's 2.9 MiB/h RSS slope); 1,000 fill
    # in about two minutes and are still far more than the admins delete meanwhile.
    finished_escrows: ClassVar[deque[str]] = deque(maxlen=1_000)

    def __init__(self, environment) -> None:
        super().__init__(environment)
        if not self.host:
            raise ValueError("host: no target URL; pass --host http://HOST[:PORT][/PREFIX] or set it in the plan")
        self.client = JourneyHttpClient(
            self.host, request_event=environment.events.request,
            connection_timeout=self.connection_timeout, network_timeout=self.network_timeout,
        )
        self.token: str | None = None

    # -- the plan ------------------------------------------------------------
    @property
    def plan(self) -> dict[str, Any]:
        return plan_of(self.environment)

    @property
    def run_tag(self) -> str:
        return self.plan.get("run_tag") or os.environ.get(RUN_TAG_ENV) or ADHOC_RUN_TAG

    def _credentials(self) -> tuple[str | None, str | None, str]:
        plan = self.plan
        accounts = plan.get("accounts") or DEFAULT_ACCOUNTS
        password_env = plan.get("password_env") or PASSWORD_ENV
        return accounts.get(self.journey), os.environ.get(password_env), password_env

    # -- login ---------------------------------------------------------------
    def on_start(self) -> None:
        self.login()

    def on_stop(self) -> None:
        self.client.close()

    def login(self) -> bool:
        """Log in with this role's account; ``False`` (and a recorded failure) when that fails."""
        self.token = None
        email, password, password_env = self._credentials()
        if not email or not password:
            problem = (
                f"no account for role {self.journey!r} in the plan" if not email
                else f"the password variable {password_env} is not set"
            )
            _log_once(logging.ERROR, "stampede journeys: cannot log in: %s", problem)
            self.environment.events.request.fire(
                request_type="POST", name="/auth/login", response_time=0.0, response_length=0,
                exception=LoginError(problem), context={}, response=None,
            )
            return False
        response = self.client.send("POST", "/auth/login", json={"email": email, "password": password})
        body = self._judge_and_report(response, "/auth/login", 200, _has_token)
        if body is not None:
            self.token = body["token"]
        return self.token is not None

    # -- requests ------------------------------------------------------------
    def call(
        self,
        method: str,
        path: str,
        *,
        name: str,
        expect: int = 200,
        json: Any = None,
        params: dict[str, Any] | None = None,
        check: Check | None = None,
        may_be_gone: bool = False,
    ) -> Any:
        """Send one authenticated request; the parsed body when it is as expected, else ``None``.

        A 204 returns ``{}``. With ``may_be_gone`` a 404 is a correct answer
        (``None``, no failure): for an entity picked from a list, which another
        user may have deleted since. A 401 logs in again once and repeats the
        request (the 401 itself is recorded as a failure: the user did have to
        redo it). Without a token (login keeps failing) the step is skipped
        until the user's next think time, so a target outage is not hammered.
        """
        if self.token is None and not self.login():
            raise RescheduleTask()
        for attempt in (1, 2):
            response = self.client.send(method, path, params=params, json=json,
                                        headers={"Authorization": f"Bearer {self.token}"})
            if response.status_code == 401 and attempt == 1:
                self.client.report(response, name, CatchResponseError("HTTP 401: token refused, logging in again"),
                                   self.context())
                if not self.login():
                    raise RescheduleTask()
                continue
            return self._judge_and_report(response, name, expect, check, may_be_gone=may_be_gone)
        return None  # unreachable: the second attempt always returns

    def _judge_and_report(self, response: JourneyResponse, name: str, expect: int, check: Check | None, *,
                          may_be_gone: bool = False) -> Any:
        body, problem = _judge(response, expect, check, may_be_gone=may_be_gone)
        # a network error is reported as itself, as Locust does; a wrong answer as what was wrong
        exception = response.error or (CatchResponseError(problem) if problem else None)
        self.client.report(response, name, exception, self.context())
        return body

    def created(self, kind: str, entity_id: Any, path: str) -> None:
        """Record one created entity in the run's ledger: cleanup deletes it by id and proves it gone."""
        mark_created(self.environment, kind, id=entity_id, url=path)

    def deleted(self, kind: str, entity_id: Any) -> None:
        """Record that this user deleted one of the run's entities: cleanup leaves that id alone."""
        mark_deleted(self.environment, kind, id=entity_id)

    def list_page(self, kind: str, params: dict[str, Any]) -> tuple[list[str], dict | None]:
        """``GET /<kind>`` (escrows or listings): the ids on the page, and the page (``None`` on failure)."""
        body = self.call("GET", f"/{kind}", name=f"/{kind}", params=params, check=check_page)
        return ([str(i["id"]) for i in body["items"]] if body else []), body

    def view_one_of(self, kind: str, ids: list[str]) -> None:
        """``GET /<kind>/{id}`` of an id picked from a list (another user may have deleted it since)."""
        if ids:
            entity_id = random.choice(ids)
            self.call("GET", f"/{kind}/{entity_id}", name=f"/{kind}/{{id}}", check=check_entity(entity_id),
                      may_be_gone=True)


class LoginError(Exception):
    """The journey could not log in before sending anything (missing account or password)."""


# -- response checks ---------------------------------------------------------
def _judge(response: JourneyResponse, expect: int, check: Check | None, *,
           may_be_gone: bool = False) -> tuple[Any, str | None]:
    """``(parsed body, None)`` when ``response`` is as expected, else ``(None, the problem)``."""
    status = response.status_code
    if status == 404 and may_be_gone:
        return None, None
    if status == 0:  # connection error, timeout: the exception says which
        return None, str(response.error or "no response")
    if 300 <= status < 400:
        return None, f"HTTP {status}: redirect not followed"
    if status != expect:
        return None, f"HTTP {status} (expected {expect})"
    if status == 204:
        return {}, None
    try:
        body = response.json()
    except (ValueError, TypeError):
        return None, f"HTTP {status}: body is not JSON"
    problem = check(body) if check else None
    if problem:
        return None, f"HTTP {status}: {problem}"
    return body, None


def _has_token(body: Any) -> str | None:
    if not isinstance(body, dict) or not isinstance(body.get("token"), str) or not body["token"]:
        return "no token in the body"
    return None


def check_page(body: Any) -> str | None:
    """``{items: [{id, ...}], total}`` as every list endpoint returns."""
    if not isinstance(body, dict):
        return "body is not an object"
    items, total = body.get("items"), body.get("total")
    if not isinstance(items, list):
        return "items is not a list of entities with an id"
    for item in items:  # a loop, not all(<generator>): a frame less per item, on every page a journey reads
        if not isinstance(item, dict) or "id" not in item:
            return "items is not a list of entities with an id"
    # total is not compared with the page: a target that counts and pages in two
    # statements may see rows created in between, which is a race, not a wrong shape
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        return "total is not a count"
    return None


def check_entity(expected_id: Any = None, **fields: Any) -> Check:
    """An entity with an ``id`` (equal to ``expected_id`` when given) and the given field values."""

    def check(body: Any) -> str | None:
        if not isinstance(body, dict) or "id" not in body:
            return "body is not an entity with an id"
        if expected_id is not None and str(body["id"]) != str(expected_id):
            return f"id {body['id']!r} is not the one requested"
        for key, value in fields.items():
            if key in body and body[key] != value:
                return f"{key} is {body[key]!r}, sent {value!r}"
        return None

    return check


_logged: set[str] = set()


def _log_once(level: int, message: str, *args: Any) -> None:
    key = message % args
    if key not in _logged:
        _logged.add(key)
        logger.log(level, message, *args)
