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
    assert answer["channel"] == "#loadtests"
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
