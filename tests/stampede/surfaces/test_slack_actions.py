"""The interactivity endpoint in-process (the plugin's FastAPI app): signature, allow-list, answers.

What a click does through a real Airflow API server is in tests/dags/test_slack_airflow_e2e.py; here the
app runs under FastAPI's TestClient and the Slack stand-in plays Slack (the signed POST, the response URL).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from stampede.core.errors import Refusal
from stampede.infra.slack_standin import SlackStandin, sign
from stampede.render.slack import ACTION_OPEN_REPORT, ACTION_PIN, ACTION_RERUN, button_value
from stampede.surfaces import slack_actions
from stampede.surfaces.slack_actions import Actor, Click, act, load_actors

PLUGIN = Path(__file__).resolve().parents[3] / "plugins" / "stampede_slack_actions.py"
SECRET = "the-slack-apps-signing-secret"
ACTORS = {"U0ALICE": {"airflow_user": "alice", "role": "op"}, "U0CAROL": {"airflow_user": "carol", "role": "user"}}


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STAMPEDE_SLACK_SIGNING_SECRET", SECRET)
    monkeypatch.setenv("STAMPEDE_SLACK_ACTORS", json.dumps(ACTORS))
    spec = importlib.util.spec_from_file_location("stampede_slack_actions", PLUGIN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def payload(action_id: str, *, user: str = "U0ALICE", response_url: str = "", value: str | None = None) -> str:
    action = {"type": "button", "action_id": action_id, "block_id": "b", "action_ts": "1700000000.000100",
              **({"value": value} if value is not None else {})}
    return urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": user, "username": user.lower()},
                                             "response_url": response_url, "actions": [action],
                                             "container": {"channel_id": "C1", "message_ts": "1.1"}})})


def signed(body: str, *, secret: str = SECRET, stamp: int | None = None) -> dict:
    stamp = str(int(time.time()) if stamp is None else stamp)
    return {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": sign(secret, stamp, body)}


def test_the_plugin_mounts_the_endpoint_on_the_api_server(app) -> None:
    (entry,) = app.StampedeSlackActionsPlugin.fastapi_apps
    assert entry["url_prefix"] == "/stampede-slack" and entry["app"] is app.app


@pytest.mark.parametrize(("headers_of", "status"), [
    pytest.param(lambda body: signed(body), 200, id="signed"),
    pytest.param(lambda body: signed(body, secret="forged"), 401, id="forged"),
    pytest.param(lambda body: signed(body, stamp=int(time.time()) - 301), 401, id="replayed-after-5-min"),
    pytest.param(lambda body: {"Content-Type": "application/x-www-form-urlencoded"}, 401, id="unsigned"),
])
def test_only_a_fresh_request_signed_with_the_apps_secret_is_taken(app, headers_of, status) -> None:
    body = payload(ACTION_OPEN_REPORT)

    answer = TestClient(app.app).post("/interactions", content=body, headers=headers_of(body))

    assert answer.status_code == status


def test_a_tampered_body_does_not_verify(app) -> None:
    body = payload(ACTION_RERUN, user="U0MALLORY")
    headers = signed(body)

    answer = TestClient(app.app).post("/interactions", content=body.replace("U0MALLORY", "U0ALICE"), headers=headers)

    assert answer.status_code == 401


def test_without_a_signing_secret_nothing_is_taken(app, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STAMPEDE_SLACK_SIGNING_SECRET")
    body = payload(ACTION_RERUN)

    assert TestClient(app.app).post("/interactions", content=body, headers=signed(body)).status_code == 503


@pytest.fixture
def served(app):
    """The plugin's app behind uvicorn on a free loopback port: the stand-in POSTs to it as Slack would."""
    import threading

    import uvicorn

    from stampede.core.netutil import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/interactions"
    server.should_exit = True
    thread.join(timeout=10)


def summary_with_buttons(slack: SlackStandin) -> tuple[str, str]:
    from slack_sdk import WebClient

    buttons = [{"type": "button", "text": {"type": "plain_text", "text": label}, "action_id": action,
                "value": button_value("loadtest_nightly", "manual__1")} for label, action in (("Re-run", ACTION_RERUN),
                                                                                             ("Pin", ACTION_PIN))]
    posted = WebClient(base_url=slack.base_url, token="xoxb-x").chat_postMessage(
        channel="#loadtests", text="summary", blocks=[{"type": "actions", "elements": buttons}])
    return posted["channel"], posted["ts"]


def wait_for_answer(slack: SlackStandin, count: int = 1) -> dict:
    deadline = time.monotonic() + 15
    while len(slack.responses()) < count:
        assert time.monotonic() < deadline, "no answer reached the response URL"
        time.sleep(0.05)
    return slack.responses()[-1]


@pytest.mark.integration
def test_someone_not_in_the_allow_list_is_refused_clearly_and_no_api_is_called(served, monkeypatch) -> None:
    def no_api():
        raise AssertionError("a refused click must not reach the Airflow API")

    monkeypatch.setattr(slack_actions.AirflowApi, "from_connection", no_api)
    with SlackStandin(signing_secret=SECRET) as slack:
        channel, ts = summary_with_buttons(slack)

        click = slack.click(served, channel=channel, ts=ts, action_id=ACTION_RERUN, user_id="U0MALLORY")
        answer = wait_for_answer(slack)

    assert click.status == 200  # the ack comes first; the answer follows on the response URL
    assert answer["response_type"] == "ephemeral" and answer["user"] == "U0MALLORY"
    assert answer["text"].startswith(":no_entry: <@U0MALLORY>, you may not re-run load tests: your Slack user is "
                                     "not in Stampede's allow-list")
    assert slack.message(channel, ts)["text"] == "summary"  # the summary itself is left as it was


@pytest.mark.integration
def test_an_allowed_click_without_stampedes_api_connection_says_what_to_configure(served, monkeypatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_STAMPEDE_AIRFLOW_API", raising=False)
    with SlackStandin(signing_secret=SECRET) as slack:
        channel, ts = summary_with_buttons(slack)

        slack.click(served, channel=channel, ts=ts, action_id=ACTION_PIN, user_id="U0ALICE")
        answer = wait_for_answer(slack)

    assert answer["text"].startswith(":warning: Nothing was done: connection stampede_airflow_api: not configured; fix:")


@pytest.mark.parametrize(("user", "action", "allowed"), [
    ("U0ALICE", ACTION_RERUN, True), ("U0ALICE", ACTION_PIN, True),
    ("U0CAROL", ACTION_RERUN, True), ("U0CAROL", ACTION_PIN, False),  # pinning needs op
])
def test_the_allow_list_maps_slack_users_to_airflow_roles(user, action, allowed) -> None:
    actors = load_actors(json.dumps(ACTORS))

    assert actors[user].may(action) is allowed


@pytest.mark.parametrize("text", ["not json", "[]", '{"U1": {"airflow_user": "a", "role": "superuser"}}',
                                  '{"U1": {"role": "op"}}'])
def test_a_broken_allow_list_is_one_line_with_the_fix(text) -> None:
    with pytest.raises(Refusal) as caught:
        load_actors(text)

    assert "fix:" in str(caught.value) and "\n" not in str(caught.value)


def test_a_role_too_low_is_told_what_it_needs() -> None:
    click = Click(action_id=ACTION_PIN, value=button_value("d", "r"), action_ts="1.2", user_id="U0CAROL",
                  user_name="carol", response_url="", channel=None, message_ts=None)

    outcome = act(click, actors={"U0CAROL": Actor("U0CAROL", "carol", "user")}, api=lambda: None)

    assert not outcome.ok and "role `user`, and this needs `op` or higher" in outcome.text


def test_the_same_click_twice_names_the_same_re_run() -> None:
    assert slack_actions._rerun_id("manual__x", "1700000000.000100") == slack_actions._rerun_id("manual__x",
                                                                                                "1700000000.000100")
    assert slack_actions._rerun_id("manual__x", "1700000000.000100") != slack_actions._rerun_id("manual__x",
                                                                                                "1700000000.000200")
