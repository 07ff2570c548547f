"""The summary's buttons, acted on: Slack's signed click in, the Airflow REST API (with Stampede's own
identity) out, a clear answer to the person who clicked.

Slack POSTs a click (``block_actions``) to the app's Request URL: the Airflow API server's
``/stampede-slack/interactions`` (``plugins/stampede_slack_actions.py`` mounts it). Then:

1. **the signature is checked** on the raw body (``X-Slack-Signature``, HMAC-SHA256 with the app's signing
   secret; a request more than 5 minutes old is refused as a replay) before anything is parsed;
2. **the person is looked up** in the allow-list (:func:`load_actors`), which maps a Slack user ID to an
   Airflow user and role. Nothing is done on the strength of a Slack identity alone: a user who is not
   listed, or whose role is too low (:data:`NEEDS`), is refused with a reply that says why and what to do;
3. **the action goes through the Airflow REST API** with the credentials of the connection
   ``stampede_airflow_api`` (Stampede's own service user: ``login``/``password`` exchanged at ``/auth/token``
   for a JWT, or a token in the password), never with the clicker's: *re-run* reads the run's ``conf`` and
   triggers the same DAG with it (the new run's id comes from the click, so a replayed click triggers
   nothing more); *pin* checks through the API that the run exists, then pins it as the baseline of its
   scenario and target in the run history (:meth:`stampede.state.history.RunStore.pin`);
4. **the answer** goes to the click's ``response_url``, seen by the clicker only (ephemeral).

Slack wants its answer within 3 s: the endpoint answers 200 at once and does steps 2-4 after.

Configuration (read on each click, so changing it needs no restart):

- ``STAMPEDE_SLACK_SIGNING_SECRET``, or the password of the connection ``stampede_slack_app``;
- the allow-list: ``STAMPEDE_SLACK_ACTORS`` or the Airflow Variable ``stampede_slack_actors``, JSON
  ``{"U0123ABCD": {"airflow_user": "alice", "role": "op"}}`` with roles ``viewer`` < ``user`` < ``op`` <
  ``admin`` (Airflow's);
- the connection ``stampede_airflow_api`` (type ``http``: host, port, schema; login and password).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote

import httpx
from slack_sdk.signature import SignatureVerifier
from slack_sdk.webhook import WebhookClient

from stampede.core import redact
from stampede.core.errors import Refusal
from stampede.render.slack import ACTION_OPEN_REPORT, ACTION_PIN, ACTION_RERUN, action_reply, parse_button_value
from stampede.state.history import RunStore

__all__ = [
    "Actor", "AirflowApi", "Click", "NEEDS", "Outcome", "ROLES", "act", "answer", "load_actors", "parse_click",
    "signing_secret", "verified",
]

log = logging.getLogger(__name__)

ENV_SIGNING_SECRET = "STAMPEDE_SLACK_SIGNING_SECRET"
SIGNING_CONN_ID = "stampede_slack_app"
ENV_ACTORS = "STAMPEDE_SLACK_ACTORS"
VARIABLE_ACTORS = "stampede_slack_actors"
API_CONN_ID = "stampede_airflow_api"
ROLES = ("viewer", "user", "op", "admin")
NEEDS = {ACTION_RERUN: "user", ACTION_PIN: "op"}
"""The lowest Airflow role that may press each button (re-running triggers a DAG run: Airflow's User may)."""
WORDS = {ACTION_RERUN: "re-run load tests", ACTION_PIN: "pin a baseline"}
API_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Actor:
    """Whom a Slack user is in Airflow, by the allow-list."""

    slack_user: str
    airflow_user: str
    role: str

    def may(self, action_id: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(NEEDS[action_id])


@dataclass(frozen=True)
class Click:
    """One button press, from Slack's ``block_actions`` payload."""

    action_id: str
    value: str | None
    action_ts: str
    user_id: str
    user_name: str
    response_url: str
    channel: str | None
    message_ts: str | None


@dataclass(frozen=True)
class Outcome:
    """What a click did, in words for the person who clicked."""

    ok: bool
    text: str


# -- what Slack sent -----------------------------------------------------------------------------------

def _connection(conn_id: str) -> Any | None:
    """An Airflow connection as the API server sees it (environment, secrets backend, metadata DB)."""
    try:
        from airflow.models.connection import Connection

        return Connection.get_connection_from_secrets(conn_id)
    except Exception as exc:  # noqa: BLE001 - not defined: the caller says what to configure
        log.debug("connection %s not available: %s", conn_id, type(exc).__name__)
        return None


def signing_secret() -> str | None:
    """The Slack app's signing secret: ``STAMPEDE_SLACK_SIGNING_SECRET``, else connection ``stampede_slack_app``."""
    secret = os.environ.get(ENV_SIGNING_SECRET)
    if secret:
        return secret
    conn = _connection(SIGNING_CONN_ID)
    return conn.password if conn is not None and conn.password else None


def verified(body: bytes, headers: dict[str, str], secret: str) -> bool:
    """Slack signed this raw body with ``secret``, less than 5 minutes ago (slack-sdk's check)."""
    return SignatureVerifier(signing_secret=secret).is_valid_request(body, headers)


def parse_click(body: bytes) -> Click | None:
    """The first action of a ``block_actions`` payload (``None`` for other interactions); ``ValueError`` if malformed."""
    try:
        payload = json.loads(parse_qs(body.decode("utf-8"))["payload"][0])
    except (KeyError, IndexError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError("not a Slack interaction payload") from exc
    if payload.get("type") != "block_actions" or not payload.get("actions"):
        return None
    action = payload["actions"][0]
    user = payload.get("user") or {}
    container = payload.get("container") or {}
    return Click(
        action_id=str(action.get("action_id") or ""), value=action.get("value"),
        action_ts=str(action.get("action_ts") or time.time()), user_id=str(user.get("id") or ""),
        user_name=str(user.get("username") or user.get("name") or user.get("id") or "?"),
        response_url=str(payload.get("response_url") or ""),
        channel=container.get("channel_id") or (payload.get("channel") or {}).get("id"),
        message_ts=container.get("message_ts"),
    )


def load_actors(text: str | None = None) -> dict[str, Actor]:
    """The allow-list: ``STAMPEDE_SLACK_ACTORS`` (or ``text``), else the Variable ``stampede_slack_actors``.

    :raises Refusal: the list is not ``{slack_user_id: {"airflow_user": name, "role": role}}``.
    """
    if text is None:
        text = os.environ.get(ENV_ACTORS) or _variable(VARIABLE_ACTORS) or "{}"
    fix = f'set {ENV_ACTORS} to {{"U0123ABCD": {{"airflow_user": "alice", "role": "op"}}}} (roles: {", ".join(ROLES)})'
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise Refusal("slack actors", f"not JSON ({exc.msg})", fix) from exc
    if not isinstance(data, dict):
        raise Refusal("slack actors", "must map Slack user IDs to Airflow users", fix)
    actors = {}
    for slack_user, entry in data.items():
        if not isinstance(entry, dict) or not entry.get("airflow_user") or entry.get("role") not in ROLES:
            raise Refusal(f"slack actors.{slack_user}", "needs an airflow_user and a role", fix)
        actors[slack_user] = Actor(slack_user=slack_user, airflow_user=str(entry["airflow_user"]), role=entry["role"])
    return actors


def _variable(name: str) -> str | None:
    try:
        from airflow.models.variable import Variable

        return Variable.get(name, default_var=None)
    except Exception as exc:  # noqa: BLE001 - no metadata DB here: the environment is the only source
        log.debug("Variable %s not available: %s", name, type(exc).__name__)
        return None


# -- the Airflow REST API, as Stampede --------------------------------------------------------------------

class ApiError(RuntimeError):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"Airflow API answered {status}: {detail}")
        self.status = status


class AirflowApi:
    """The Airflow REST API (``/api/v2``) with Stampede's service identity (connection ``stampede_airflow_api``).

    :param base_url: e.g. ``http://127.0.0.1:8080``; with ``username``/``password`` a JWT is fetched from
        ``/auth/token`` (and fetched again when it expires), with ``token`` it is used as is.
    """

    def __init__(self, base_url: str, *, username: str | None = None, password: str | None = None,
                 token: str | None = None, timeout_s: float = API_TIMEOUT_S) -> None:
        self.base_url = base_url.rstrip("/")
        self._username, self._password, self._token = username, password, token
        self._client = httpx.Client(timeout=timeout_s, follow_redirects=False)

    @classmethod
    def from_connection(cls, conn_id: str = API_CONN_ID) -> AirflowApi:
        conn = _connection(conn_id)
        if conn is None or not conn.host:
            raise Refusal(f"connection {conn_id}", "not configured",
                          "add an http connection with the API server's host and port and Stampede's "
                          "service user as login and password")
        host = conn.host if "://" in conn.host else f"{conn.schema or 'http'}://{conn.host}"
        base = f"{host}:{conn.port}" if conn.port else host
        if conn.login:
            return cls(base, username=conn.login, password=conn.password)
        return cls(base, token=conn.password)

    def close(self) -> None:
        self._client.close()

    def _login(self) -> str:
        response = self._client.post(f"{self.base_url}/auth/token",
                                     json={"username": self._username, "password": self._password})
        if response.status_code not in (200, 201):
            raise ApiError(response.status_code, "Stampede's service user could not log in")
        self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        token = self._token or self._login()
        response = self._client.request(method, f"{self.base_url}{path}", headers={"Authorization": f"Bearer {token}"},
                                        **kwargs)
        if response.status_code == 401 and self._username:  # the JWT expired: once more with a fresh one
            response = self._client.request(method, f"{self.base_url}{path}",
                                            headers={"Authorization": f"Bearer {self._login()}"}, **kwargs)
        return response

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        response = self.request("GET", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}")
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise ApiError(response.status_code, _detail(response))
        return response.json()

    def trigger(self, dag_id: str, *, run_id: str, conf: dict[str, Any], note: str) -> tuple[bool, dict[str, Any]]:
        """(created, the run): ``False`` when a run with that id exists already (the click was replayed)."""
        response = self.request("POST", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns",
                                json={"dag_run_id": run_id, "logical_date": None, "conf": conf, "note": note})
        if response.status_code == 409:
            return False, self.dag_run(dag_id, run_id) or {"dag_run_id": run_id}
        if response.status_code not in (200, 201):
            raise ApiError(response.status_code, _detail(response))
        return True, response.json()


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = response.text
    return redact.text(str(detail))[:300]


# -- the actions ------------------------------------------------------------------------------------------

def _rerun_id(run_id: str, action_ts: str) -> str:
    """The re-run's id, from the click: the same click twice names the same run (Airflow refuses the second)."""
    stamp = re.sub(r"[^0-9]", "", action_ts)[:16] or str(int(time.time() * 1e6))
    return f"slack_rerun__{stamp}__{run_id}"[:250]


def act(click: Click, *, actors: dict[str, Actor], api: Callable[[], AirflowApi] = AirflowApi.from_connection,
        store: Any = None) -> Outcome:
    """Do what the button says, if the person may; never raises (the answer says what went wrong).

    :param api: makes the REST API client, once the person may act (nothing is called for a refusal).
    :param store: the run history (default :class:`~stampede.state.history.RunStore`).
    """
    if click.action_id == ACTION_OPEN_REPORT:
        return Outcome(ok=True, text="")  # a link button: Slack opens the report itself
    if click.action_id not in NEEDS:
        return Outcome(ok=False, text=f"Stampede does not know the button `{click.action_id}`.")
    actor = actors.get(click.user_id)
    what = WORDS[click.action_id]
    if actor is None:
        return Outcome(ok=False, text=(
            f":no_entry: <@{click.user_id}>, you may not {what}: your Slack user is not in Stampede's allow-list. "
            f"Ask the platform team to map it to your Airflow user ({ENV_ACTORS} or the Variable {VARIABLE_ACTORS})."))
    if not actor.may(click.action_id):
        return Outcome(ok=False, text=(
            f":no_entry: <@{click.user_id}>, you may not {what}: Stampede knows you as Airflow user "
            f"`{actor.airflow_user}` with role `{actor.role}`, and this needs `{NEEDS[click.action_id]}` or higher."))
    try:
        button = parse_button_value(click.value)
    except ValueError:
        return Outcome(ok=False, text="This button carries no run: nothing was done.")
    client = None
    try:
        client = api()
        if click.action_id == ACTION_RERUN:
            return _rerun(click, actor, client, button.dag_id, button.run_id)
        return _pin(actor, client, store, button.dag_id, button.run_id)
    except (ApiError, httpx.HTTPError, Refusal) as exc:
        log.warning("Slack action %s failed: %s", click.action_id, redact.text(str(exc)))
        return Outcome(ok=False, text=f":warning: Nothing was done: {redact.text(str(exc))}")
    finally:
        if client is not None:
            client.close()


def _rerun(click: Click, actor: Actor, api: AirflowApi, dag_id: str, run_id: str) -> Outcome:
    original = api.dag_run(dag_id, run_id)
    if original is None:
        return Outcome(ok=False, text=f":warning: Run `{run_id}` of `{dag_id}` is not in Airflow: nothing was re-run.")
    new_id = _rerun_id(run_id, click.action_ts)
    note = f"Re-run of {run_id}, asked in Slack by {actor.airflow_user} ({click.user_id})"
    created, run = api.trigger(dag_id, run_id=new_id, conf=dict(original.get("conf") or {}), note=note)
    link = f"{api.base_url}/dags/{quote(dag_id, safe='')}/runs/{quote(new_id, safe='')}"
    if not created:
        return Outcome(ok=True, text=f"This click already re-ran `{dag_id}`: <{link}|run {new_id}> ({run.get('state')}).")
    return Outcome(ok=True, text=(f":repeat: Re-running `{dag_id}` with the same settings as `{run_id}`: "
                                  f"<{link}|run {new_id}> ({run.get('state', 'queued')}), for {actor.airflow_user}."))


def _pin(actor: Actor, api: AirflowApi, store: Any, dag_id: str, run_id: str) -> Outcome:
    if api.dag_run(dag_id, run_id) is None:
        return Outcome(ok=False, text=f":warning: Run `{run_id}` of `{dag_id}` is not in Airflow: nothing was pinned.")
    own = store is None
    store = store or RunStore()
    try:
        pinned = store.pin(run_id, by=f"{actor.airflow_user} (Slack {actor.slack_user})")
    except LookupError:
        return Outcome(ok=False, text=f":warning: Run `{run_id}` is not in the run history (did it finish?): "
                                      "nothing was pinned.")
    finally:
        if own:
            store.close()
    return Outcome(ok=True, text=(f":pushpin: Run `{run_id}` is now the baseline of `{pinned['scenario']}` on "
                                  f"`{pinned['target_key']}`, pinned by {actor.airflow_user}."))


def answer(click: Click, outcome: Outcome) -> None:
    """Tell the person who clicked (ephemeral, through the click's ``response_url``); never raises."""
    if not outcome.text or not click.response_url:
        return
    message = action_reply(outcome.text)
    try:
        WebhookClient(click.response_url, timeout=API_TIMEOUT_S).send(
            text=message.text, blocks=message.blocks, response_type="ephemeral", replace_original=False)
    except Exception as exc:  # noqa: BLE001 - the action is done; a lost answer is a warning
        log.warning("Slack answer not sent: %s: %s", type(exc).__name__, redact.text(str(exc)))
