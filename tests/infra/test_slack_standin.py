"""The Slack stand-in answers what slack-sdk's WebClient sends, the way Slack does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from stampede.infra.slack_standin import SlackStandin

TOKEN = "xoxb-standin-test-token"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture
def standin():
    with SlackStandin(token=TOKEN) as server:
        yield server


@pytest.fixture
def client(standin: SlackStandin) -> WebClient:
    return WebClient(token=TOKEN, base_url=standin.base_url, timeout=5)


def test_auth_test_answers_ok(client: WebClient, standin: SlackStandin) -> None:
    answer = client.auth_test()

    assert answer["ok"] is True
    assert answer["team_id"] == "T0STANDIN"
    assert [c.method for c in standin.calls] == ["auth.test"]


@pytest.mark.parametrize(
    ("token", "error"),
    [
        pytest.param(None, "not_authed", id="missing"),
        pytest.param("xoxb-wrong", "invalid_auth", id="wrong"),
    ],
)
def test_token_is_checked(standin: SlackStandin, token: str | None, error: str) -> None:
    with pytest.raises(SlackApiError) as caught:
        WebClient(token=token, base_url=standin.base_url).chat_postMessage(channel="#lt", text="hi")

    assert caught.value.response["error"] == error
    assert standin.messages() == []
    assert standin.calls[-1].error == error


def test_any_token_accepted_when_none_configured() -> None:
    with SlackStandin() as server:
        answer = WebClient(token="xoxb-anything", base_url=server.base_url).chat_postMessage(channel="#c", text="x")

    assert answer["ok"] is True


def test_post_message_json_body(client: WebClient, standin: SlackStandin) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*bold*"}}]

    answer = client.chat_postMessage(channel="#loadtests", text="hello", blocks=blocks)

    assert answer["ok"] is True
    assert answer["channel"] == standin.channel_id("#loadtests") and answer["channel"].startswith("C")  # an ID
    assert answer["message"]["text"] == "hello"
    assert standin.messages() == [{"channel": "#loadtests", "text": "hello", "blocks": blocks}]


def test_post_message_form_body(client: WebClient, standin: SlackStandin) -> None:
    blocks = [{"type": "divider"}]

    client.api_call("chat.postMessage", params={"channel": "C1", "text": "form", "blocks": json.dumps(blocks)})

    assert standin.messages() == [{"channel": "C1", "text": "form", "blocks": blocks}]


def test_post_message_without_channel_is_an_error(client: WebClient, standin: SlackStandin) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.api_call("chat.postMessage", json={"text": "nowhere"})

    assert caught.value.response["error"] == "channel_not_found"


def test_files_upload_v2_full_flow(client: WebClient, standin: SlackStandin, tmp_path: Path) -> None:
    data = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
    path = tmp_path / "chart.png"
    path.write_bytes(data)

    answer = client.files_upload_v2(channel="C0LOADTEST", file=str(path), title="p95 by stage", initial_comment="hi")

    assert answer["ok"] is True
    assert answer["file"]["name"] == "chart.png"
    assert [c.method for c in standin.calls] == [
        "files.getUploadURLExternal", "upload", "files.completeUploadExternal",
    ]
    upload = standin.calls[1].upload
    assert upload == {"file_id": answer["file"]["id"], "filename": "chart.png", "length": len(data)}
    (record,) = standin.files()
    assert record["filename"] == "chart.png"
    assert record["title"] == "p95 by stage"
    assert record["length"] == record["uploaded_bytes"] == len(data)
    assert record["completed"] is True
    assert record["channel"] == "C0LOADTEST"
    assert record["initial_comment"] == "hi"
    assert standin.file_bytes(record["file_id"]) == data


def test_upload_url_points_back_at_the_standin(client: WebClient, standin: SlackStandin) -> None:
    answer = client.files_getUploadURLExternal(filename="a.txt", length=3)

    assert answer["upload_url"].startswith(standin.url + "/")
    assert answer["file_id"]


def test_complete_before_upload_is_an_error(client: WebClient) -> None:
    file_id = client.files_getUploadURLExternal(filename="a.txt", length=3)["file_id"]

    with pytest.raises(SlackApiError) as caught:
        client.files_completeUploadExternal(files=[{"id": file_id, "title": "a"}], channel_id="C1")

    assert caught.value.response["error"] == "file_upload_not_completed"


def test_upload_to_unknown_file_id_is_404(standin: SlackStandin) -> None:
    request = urllib.request.Request(f"{standin.url}/upload/v1/F404", data=b"abc", method="POST")

    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=5)

    assert caught.value.code == 404
    caught.value.close()


def test_unknown_method(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.api_call("conversations.nothing")

    assert caught.value.response["error"] == "unknown_method"


def test_forced_error(client: WebClient, standin: SlackStandin) -> None:
    standin.errors["chat.postMessage"] = "channel_not_found"

    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="#gone", text="x")

    assert caught.value.response["error"] == "channel_not_found"
    assert standin.messages() == []


def test_records_to_jsonl_without_the_token(tmp_path: Path) -> None:
    record = tmp_path / "calls.jsonl"
    with SlackStandin(token=TOKEN, record_path=record) as server:
        WebClient(token=TOKEN, base_url=server.base_url).chat_postMessage(channel="#c", text="kept")

    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert [(c["method"], c["params"]) for c in lines] == [("chat.postMessage", {"channel": "#c", "text": "kept"})]
    assert TOKEN not in record.read_text()


def test_stop_frees_the_port() -> None:
    server = SlackStandin().start()
    url = server.base_url
    server.stop()
    server.stop()  # idempotent

    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "auth.test", data=b"", timeout=2)
    assert not server.running


def test_runs_as_a_process_until_sigterm(tmp_path: Path) -> None:
    port_file, record = tmp_path / "slack.port", tmp_path / "slack.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "stampede.infra.slack_standin", "--port-file", str(port_file), "--record", str(record)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the stand-in never wrote its port"
            time.sleep(0.05)
        port = int(port_file.read_text())

        WebClient(token="xoxb-demo", base_url=f"http://127.0.0.1:{port}/api/").chat_postMessage(channel="#d", text="demo")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)

    assert proc.returncode == 0, err.decode()
    assert f"http://127.0.0.1:{port}/api/" in out.decode()
    (call,) = [json.loads(line) for line in record.read_text().splitlines()]
    assert call["method"] == "chat.postMessage"
    assert call["params"] == {"channel": "#d", "text": "demo"}


# -- threads, edits, history -----------------------------------------------------------------------------

def test_a_thread_can_be_read_back(client: WebClient, standin: SlackStandin) -> None:
    parent = client.chat_postMessage(channel="#loadtests", text="run starts")
    channel = parent["channel"]
    client.chat_postMessage(channel=channel, text="stage one", thread_ts=parent["ts"])
    client.chat_postMessage(channel=channel, text="aborted", thread_ts=parent["ts"], reply_broadcast=True)
    reply_to_reply = client.chat_postMessage(channel=channel, text="late", thread_ts=standin.thread(channel, parent["ts"])[1]["ts"])

    replies = client.conversations_replies(channel=channel, ts=parent["ts"])["messages"]
    history = client.conversations_history(channel=channel)["messages"]

    assert [m["text"] for m in replies] == ["run starts", "stage one", "aborted", "late"]
    assert replies[0]["reply_count"] == 3
    assert reply_to_reply["message"]["thread_ts"] == parent["ts"]  # a reply to a reply joins the parent's thread
    assert [m["text"] for m in history] == ["aborted", "run starts"]  # newest first: the broadcast shows
    assert history[0]["subtype"] == "thread_broadcast"


def test_a_reply_to_a_message_that_does_not_exist_is_refused(client: WebClient, standin: SlackStandin) -> None:
    channel = client.chat_postMessage(channel="#loadtests", text="x")["channel"]

    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel=channel, text="orphan", thread_ts="123.456")

    assert caught.value.response["error"] == "thread_not_found"


def test_chat_update_edits_in_place_and_wants_the_channel_id(client: WebClient, standin: SlackStandin) -> None:
    posted = client.chat_postMessage(channel="#loadtests", text="starting", blocks=[{"type": "divider"}])

    with pytest.raises(SlackApiError) as by_name:
        client.chat_update(channel="#loadtests", ts=posted["ts"], text="done")
    with pytest.raises(SlackApiError) as unknown:
        client.chat_update(channel=posted["channel"], ts="1.000001", text="done")
    client.chat_update(channel=posted["channel"], ts=posted["ts"], text="PASS")

    assert by_name.value.response["error"] == "channel_not_found"
    assert unknown.value.response["error"] == "message_not_found"
    now = standin.message(posted["channel"], posted["ts"])
    assert now["text"] == "PASS" and "blocks" not in now and now["edited"]["count"] == 1
    assert [u["text"] for u in standin.updates()] == ["PASS"]


# -- rate limits ---------------------------------------------------------------------------------------

def _raw_post(standin: SlackStandin, method: str, body: dict) -> tuple[int, dict, dict]:
    request = urllib.request.Request(f"{standin.base_url}{method}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, dict(answer.headers), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), json.loads(exc.read())


def test_rate_limit_for_a_while_answers_429_with_retry_after(standin: SlackStandin) -> None:
    standin.rate_limit(for_s=0.6, retry_after=2)

    status, headers, body = _raw_post(standin, "chat.postMessage", {"channel": "#c", "text": "a"})
    auth_status, _, _ = _raw_post(standin, "auth.test", {})  # only the named methods are limited
    time.sleep(0.7)
    after, _, _ = _raw_post(standin, "chat.postMessage", {"channel": "#c", "text": "b"})

    assert (status, headers["Retry-After"], body) == (429, "2", {"ok": False, "error": "ratelimited"})
    assert auth_status == 200 and after == 200
    assert [m["text"] for m in standin.messages()] == ["b"]
    assert [c.status for c in standin.rate_limited()] == [429]


def test_rate_limit_for_a_number_of_calls_and_a_fractional_retry_after(standin: SlackStandin) -> None:
    standin.rate_limit(calls=2, retry_after="1.5")

    answers = [_raw_post(standin, "chat.postMessage", {"channel": "#c", "text": str(i)}) for i in range(3)]

    assert [(a[0], a[1].get("Retry-After")) for a in answers] == [(429, "1.5"), (429, "1.5"), (200, None)]


# -- Block Kit limits, as Slack enforces them -----------------------------------------------------------

def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def _table(rows: int, cells: int = 2) -> dict:
    return {"type": "table", "rows": [[{"type": "raw_text", "text": "x"}] * cells for _ in range(rows)]}


def _button(action_id: str, **extra) -> dict:
    return {"type": "button", "text": {"type": "plain_text", "text": "Go"}, "action_id": action_id, **extra}


@pytest.mark.parametrize(
    ("blocks", "error"),
    [
        pytest.param([{"type": "divider"}] * 51, "invalid_blocks", id="51-blocks"),
        pytest.param([_section("x" * 3001)], "invalid_blocks", id="section-3001"),
        pytest.param([{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}], "invalid_blocks",
                     id="header-151"),
        pytest.param([{"type": "header", "text": {"type": "mrkdwn", "text": "*h*"}}], "invalid_blocks", id="header-mrkdwn"),
        pytest.param([{"type": "section", "fields": [{"type": "mrkdwn", "text": "f"}] * 11}], "invalid_blocks",
                     id="11-fields"),
        pytest.param([{"type": "context", "elements": [{"type": "mrkdwn", "text": "c"}] * 11}], "invalid_blocks",
                     id="context-11"),
        pytest.param([{"type": "actions", "elements": [_button("a"), _button("a")]}], "invalid_blocks",
                     id="duplicate-action-id"),
        pytest.param([{"type": "actions", "elements": [_button("a", url="file:///tmp/report.html")]}], "invalid_blocks",
                     id="button-file-url"),
        pytest.param([{"type": "divider", "block_id": "b"}, {"type": "divider", "block_id": "b"}], "invalid_blocks",
                     id="duplicate-block-id"),
        pytest.param([_table(101)], "invalid_blocks", id="table-101-rows"),
        pytest.param([_table(2, cells=21)], "invalid_blocks", id="table-21-cells"),
        pytest.param([_table(2), _table(2)], "only_one_table_allowed", id="two-tables"),
        pytest.param([_section("x" * 2900)] * 5, "msg_blocks_too_long", id="aggregate"),
        pytest.param([{"type": "carousel"}], "invalid_blocks", id="unknown-type"),
    ],
)
def test_blocks_over_slacks_limits_are_refused(client: WebClient, standin: SlackStandin, blocks, error) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="#c", text="fallback", blocks=blocks)

    assert caught.value.response["error"] == error
    assert caught.value.response["response_metadata"]["messages"]  # Slack says why
    assert standin.messages() == []


def test_blocks_at_slacks_limits_are_taken(client: WebClient, standin: SlackStandin) -> None:
    blocks = ([{"type": "header", "text": {"type": "plain_text", "text": "h" * 150}}, _section("x" * 3000), _table(100, 20)]
              + [{"type": "actions", "elements": [_button(f"b{i}") for i in range(25)]}] + [{"type": "divider"}] * 46)

    client.chat_postMessage(channel="#c", text="fallback", blocks=blocks)

    assert len(standin.messages()[0]["blocks"]) == 50


def test_text_over_40000_characters_is_too_long(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel="#c", text="x" * 40_001)

    assert caught.value.response["error"] == "msg_too_long"


# -- files in threads ---------------------------------------------------------------------------------

def test_a_file_shared_in_a_thread_is_a_reply(client: WebClient, standin: SlackStandin, tmp_path: Path) -> None:
    path = tmp_path / "load.png"
    path.write_bytes(b"\x89PNG" + bytes(100))
    parent = client.chat_postMessage(channel="#loadtests", text="run")

    client.files_upload_v2(channel=parent["channel"], thread_ts=parent["ts"], file=str(path), title="load",
                           initial_comment="the chart")

    thread = standin.thread(parent["channel"], parent["ts"])
    assert [m["text"] for m in thread] == ["run", "the chart"]
    (record,) = standin.files()
    assert thread[1]["files"] == [{"id": record["file_id"]}] and record["thread_ts"] == parent["ts"]


@pytest.mark.parametrize(
    ("channel", "thread_ts", "error"),
    [
        pytest.param("#loadtests", None, "invalid_channel", id="a-name-not-an-id"),
        pytest.param("ID", "1.000001", "invalid_thread_ts", id="unknown-thread"),
    ],
)
def test_a_file_needs_a_channel_id_and_a_real_thread(client: WebClient, standin: SlackStandin, tmp_path: Path,
                                                    channel, thread_ts, error) -> None:
    path = tmp_path / "a.txt"
    path.write_text("abc")
    real = client.chat_postMessage(channel="#loadtests", text="run")["channel"]

    with pytest.raises(SlackApiError) as caught:
        client.files_upload_v2(channel=real if channel == "ID" else channel, file=str(path), title="a",
                               **({"thread_ts": thread_ts} if thread_ts else {}))

    assert caught.value.response["error"] == error


# -- button clicks -------------------------------------------------------------------------------------

class _App:
    """A tiny app behind an Interactivity Request URL: keeps what Slack sent, answers 200."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received = self.received = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                received.append((dict(self.headers), self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/slack/interactions"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app():
    server = _App()
    yield server
    server.close()


def _message_with_a_button(client: WebClient) -> dict:
    blocks = [_section("summary"), {"type": "actions", "block_id": "acts",
                                    "elements": [_button("stampede_rerun", value='{"run_id": "r1"}', style="primary")]}]
    return client.chat_postMessage(channel="#loadtests", text="summary", blocks=blocks)


def test_a_click_is_a_signed_block_actions_post(client: WebClient, standin: SlackStandin, app: _App) -> None:
    from urllib.parse import parse_qs

    from slack_sdk.signature import SignatureVerifier

    posted = _message_with_a_button(client)

    result = standin.click(app.url, channel=posted["channel"], ts=posted["ts"], action_id="stampede_rerun",
                           user_id="U0ALICE", username="alice")

    assert result.status == 200
    ((headers, body),) = app.received
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert SignatureVerifier(standin.signing_secret).is_valid_request(body, headers)
    payload = json.loads(parse_qs(body.decode())["payload"][0])
    assert payload["type"] == "block_actions" and payload["user"]["id"] == "U0ALICE"
    assert payload["container"] == {"type": "message", "message_ts": posted["ts"], "channel_id": posted["channel"],
                                    "is_ephemeral": False}
    (action,) = payload["actions"]
    assert (action["action_id"], action["block_id"], action["value"]) == ("stampede_rerun", "acts", '{"run_id": "r1"}')
    assert payload["response_url"] == result.response_url and result.response_url.startswith(standin.url)


def test_a_forged_click_does_not_verify(client: WebClient, standin: SlackStandin, app: _App) -> None:
    from slack_sdk.signature import SignatureVerifier

    posted = _message_with_a_button(client)

    standin.click(app.url, channel=posted["channel"], ts=posted["ts"], action_id="stampede_rerun", secret="not-the-secret")
    standin.click(app.url, channel=posted["channel"], ts=posted["ts"], action_id="stampede_rerun",
                  timestamp=int(time.time()) - 600)  # a replay: signed, but 10 minutes old

    verifier = SignatureVerifier(standin.signing_secret)
    assert [verifier.is_valid_request(body, headers) for headers, body in app.received] == [False, False]


def test_a_click_on_a_missing_button_is_an_error(client: WebClient, standin: SlackStandin, app: _App) -> None:
    posted = _message_with_a_button(client)

    with pytest.raises(LookupError):
        standin.click(app.url, channel=posted["channel"], ts=posted["ts"], action_id="nope")
    assert app.received == []


def test_answers_to_the_response_url_are_kept_and_limited_to_five(client: WebClient, standin: SlackStandin,
                                                                   app: _App) -> None:
    from slack_sdk.webhook import WebhookClient

    posted = _message_with_a_button(client)
    result = standin.click(app.url, channel=posted["channel"], ts=posted["ts"], action_id="stampede_rerun")
    webhook = WebhookClient(result.response_url)

    first = webhook.send(text="only for you", response_type="ephemeral", replace_original=False)
    replaced = webhook.send(text="re-run started", replace_original=True)
    statuses = [webhook.send(text=f"again {i}").status_code for i in range(4)]

    assert first.status_code == replaced.status_code == 200
    assert statuses == [200, 200, 200, 404]  # five answers per response URL
    assert standin.responses()[0]["text"] == "only for you" and standin.responses()[0]["user"] == "U0ALICE"
    assert standin.message(posted["channel"], posted["ts"])["text"] == "re-run started"  # replace_original edits it
