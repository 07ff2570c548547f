"""StampedeSlackHook: the Slack provider's hook, its real slack-sdk client, against the real Slack stand-in.

Slack must never fail a run: without configuration, on Slack errors and during
an outage, the hook logs, writes the fallback file and answers ``ok=False``.
A rate limit is not an outage: it is waited out as Slack asks, within the call's
budget, and past it the message is handed back to be kept queued, never to the file.
The token never reaches a log line.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from stampede.infra.slack_standin import SlackStandin
from stampede.hooks.slack import FALLBACK_FILE, StampedeSlackHook

TOKEN = "xoxb-1234567890-hook-test-SECRET"
CHANNEL = "#loadtests"
CONN_ENV = "AIRFLOW_CONN_SLACK_API_DEFAULT"


def read_fallback(directory: Path) -> list[dict]:
    return [json.loads(line) for line in (directory / FALLBACK_FILE).read_text().splitlines()]


@pytest.fixture(autouse=True)
def no_slack_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("STAMPEDE_SLACK_TOKEN", "STAMPEDE_SLACK_BASE_URL", "STAMPEDE_SLACK_CHANNEL", CONN_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG)
    return caplog


@pytest.fixture
def standin():
    with SlackStandin(token=TOKEN) as server:
        yield server


@pytest.fixture
def env_config(monkeypatch: pytest.MonkeyPatch, standin: SlackStandin) -> SlackStandin:
    monkeypatch.setenv("STAMPEDE_SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("STAMPEDE_SLACK_BASE_URL", standin.base_url)
    monkeypatch.setenv("STAMPEDE_SLACK_CHANNEL", CHANNEL)
    return standin


@pytest.fixture
def airflow_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Airflow reads AIRFLOW_HOME on first import; the session's own (tests/conftest.py) is kept.

    Reading a connection from ``AIRFLOW_CONN_*`` needs no metadata DB (no ``airflow db migrate``).
    """
    if "airflow" not in sys.modules and not os.environ.get("AIRFLOW_HOME"):
        monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path_factory.mktemp("airflow_home")))
    return Path(os.environ["AIRFLOW_HOME"])


def test_the_hook_is_the_slack_providers_hook() -> None:
    from airflow.providers.slack.hooks.slack import SlackHook

    hook = StampedeSlackHook()

    assert isinstance(hook, SlackHook)
    assert hook.slack_conn_id == "slack_api_default" and hook.conn_type == "slack"


@pytest.mark.integration
def test_connection_extras_configure_the_providers_client(
    monkeypatch: pytest.MonkeyPatch, airflow_home: Path, standin: SlackStandin
) -> None:
    conn = {"conn_type": "slack", "password": TOKEN,
            "extra": {"base_url": standin.base_url, "timeout": 2, "proxy": "http://127.0.0.1:3128", "channel": CHANNEL}}
    monkeypatch.setenv(CONN_ENV, json.dumps(conn))

    client = StampedeSlackHook().client

    assert client.base_url == standin.base_url and client.timeout == 2 and client.proxy == "http://127.0.0.1:3128"
    # a connection may lower the timeout, never raise it past the hook's (a hung Slack must not hold the run)
    monkeypatch.setenv(CONN_ENV, json.dumps({**conn, "extra": {**conn["extra"], "timeout": 60}}))
    assert StampedeSlackHook().client.timeout == StampedeSlackHook.timeout_s


@pytest.mark.integration
def test_post_via_env_config(env_config: SlackStandin) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*p95* 180 ms"}}]

    answer = StampedeSlackHook().post_message(text="Load test passed", blocks=blocks)

    assert answer.ok is True
    assert answer.channel == env_config.channel_id(CHANNEL) and answer.ts
    assert env_config.messages() == [{"channel": CHANNEL, "text": "Load test passed", "blocks": blocks,
                                      "unfurl_links": False}]


@pytest.mark.integration
def test_constructor_channel_wins(env_config: SlackStandin) -> None:
    StampedeSlackHook(channel="C0OTHER").post_message(text="x")

    assert env_config.messages() == [{"channel": "C0OTHER", "text": "x", "unfurl_links": False}]


@pytest.mark.integration
@pytest.mark.parametrize(
    "extra_of",
    [
        pytest.param(lambda url: {"base_url": url, "channel": CHANNEL}, id="extra"),
        pytest.param(
            lambda url: {"extra__slack__base_url": url, "extra__slack__channel": CHANNEL},
            id="extra__slack__prefixed",
        ),
    ],
)
def test_post_via_airflow_connection_from_env(
    monkeypatch: pytest.MonkeyPatch, airflow_home: Path, standin: SlackStandin, extra_of, all_logs
) -> None:
    conn = {"conn_type": "slack", "password": TOKEN, "extra": extra_of(standin.base_url)}
    monkeypatch.setenv(CONN_ENV, json.dumps(conn))

    hook = StampedeSlackHook()
    answer = hook.post_message(text="from the connection")

    assert answer.ok is True, answer
    assert hook.source == "Airflow connection 'slack_api_default'"
    assert standin.messages() == [{"channel": CHANNEL, "text": "from the connection", "unfurl_links": False}]
    assert TOKEN not in all_logs.text


@pytest.mark.integration
def test_airflow_connection_without_channel_takes_it_from_env(
    monkeypatch: pytest.MonkeyPatch, airflow_home: Path, standin: SlackStandin
) -> None:
    conn = {"conn_type": "slack", "password": TOKEN, "extra": {"base_url": standin.base_url}}
    monkeypatch.setenv(CONN_ENV, json.dumps(conn))
    monkeypatch.setenv("STAMPEDE_SLACK_CHANNEL", "C0FROMENV")

    StampedeSlackHook().post_message(text="x")

    assert standin.messages() == [{"channel": "C0FROMENV", "text": "x", "unfurl_links": False}]


@pytest.mark.integration
def test_upload_png(env_config: SlackStandin, tmp_path: Path, tiny_png: bytes) -> None:
    png = tmp_path / "p95.png"
    png.write_bytes(tiny_png)

    answer = StampedeSlackHook(channel="C0LOADTEST").upload_file(path=png, title="p95 per stage", comment="chart")

    assert answer.ok is True
    assert [c.method for c in env_config.calls] == [
        "files.getUploadURLExternal", "upload", "files.completeUploadExternal",
    ]
    (uploaded,) = env_config.files()
    assert uploaded["filename"] == "p95.png"
    assert uploaded["title"] == "p95 per stage"
    assert uploaded["uploaded_bytes"] == png.stat().st_size
    assert uploaded["channel"] == "C0LOADTEST"
    assert uploaded["initial_comment"] == "chart"
    assert uploaded["completed"] is True
    assert env_config.file_bytes(uploaded["file_id"]) == png.read_bytes()


@pytest.mark.integration
def test_secrets_are_masked_before_sending(env_config: SlackStandin) -> None:
    StampedeSlackHook().post_message(
        text="login failed: password=hunter2 with xoxp-999-leaked",
        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": "Authorization: Bearer abcdef123456"}}],
    )

    (message,) = env_config.messages()
    assert message["text"] == "login failed: password=*** with xoxp-***"
    assert message["blocks"][0]["text"]["text"] == "Authorization: Bearer ***"


def test_no_configuration_logs_and_writes_fallback(tmp_path: Path, all_logs) -> None:
    answer = StampedeSlackHook(fallback_dir=tmp_path).post_message(text="nobody listens", blocks=[{"type": "divider"}])

    assert (answer.ok, answer.error, answer.kept) == (False, "not_configured", str(tmp_path / FALLBACK_FILE))
    (entry,) = read_fallback(tmp_path)
    assert entry["kind"] == "message"
    assert entry["error"] == "not_configured"
    assert entry["text"] == "nobody listens"
    assert entry["blocks"] == [{"type": "divider"}]
    assert any(r.name == "stampede.slack" and "nobody listens" in r.getMessage() for r in all_logs.records)


def test_no_configuration_without_fallback_dir_only_logs(all_logs) -> None:
    answer = StampedeSlackHook().upload_file(path=Path(__file__), title="t")

    assert (answer.ok, answer.error, answer.kept) == (False, "not_configured", None)


def test_no_channel_goes_to_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STAMPEDE_SLACK_TOKEN", TOKEN)

    answer = StampedeSlackHook(fallback_dir=tmp_path).post_message(text="where to?")

    assert answer.error == "no_channel"
    assert read_fallback(tmp_path)[0]["text"] == "where to?"


@pytest.mark.integration
def test_missing_file_goes_to_fallback(env_config: SlackStandin, tmp_path: Path) -> None:
    answer = StampedeSlackHook(fallback_dir=tmp_path).upload_file(path=tmp_path / "nope.png", title="t")

    assert answer.ok is False
    assert answer.error == "file_not_found"
    assert env_config.calls == []


@pytest.mark.integration
@pytest.mark.parametrize(
    ("forced", "token"),
    [
        pytest.param("channel_not_found", TOKEN, id="slack-error"),
        pytest.param(None, "xoxb-wrong-token-value", id="invalid-auth"),
    ],
)
def test_slack_error_never_raises(
    monkeypatch: pytest.MonkeyPatch, env_config: SlackStandin, tmp_path: Path, all_logs, forced, token
) -> None:
    if forced:
        env_config.errors["chat.postMessage"] = forced
    monkeypatch.setenv("STAMPEDE_SLACK_TOKEN", token)

    answer = StampedeSlackHook(fallback_dir=tmp_path).post_message(text="summary")

    expected = forced or "invalid_auth"
    assert (answer.ok, answer.error, answer.kept) == (False, expected, str(tmp_path / FALLBACK_FILE))
    assert read_fallback(tmp_path)[0]["error"] == expected
    assert any(r.levelno == logging.WARNING and expected in r.getMessage() for r in all_logs.records)
    assert token not in all_logs.text
    assert token not in (tmp_path / FALLBACK_FILE).read_text()


@pytest.mark.integration
def test_outage_never_raises_and_is_bounded(env_config: SlackStandin, tmp_path: Path, all_logs, tiny_png: bytes) -> None:
    env_config.stop()
    hook = StampedeSlackHook(fallback_dir=tmp_path)
    png = tmp_path / "chart.png"
    png.write_bytes(tiny_png)

    started = time.monotonic()
    message = hook.post_message(text="final summary")
    upload = hook.upload_file(path=png, title="chart", comment="see chart")
    elapsed = time.monotonic() - started

    assert elapsed < 15
    assert message.ok is False and message.error == "unreachable"
    assert upload.ok is False and upload.error == "unreachable"
    assert [(e["kind"], e["error"]) for e in read_fallback(tmp_path)] == [
        ("message", "unreachable"), ("file", "unreachable"),
    ]
    assert not [r for r in all_logs.records if r.levelno >= logging.ERROR]  # an outage is a warning
    assert TOKEN not in all_logs.text


@pytest.mark.integration
def test_hanging_slack_is_bounded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, all_logs) -> None:
    with socket.socket() as silent:  # accepts connections (backlog) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        monkeypatch.setenv("STAMPEDE_SLACK_TOKEN", TOKEN)
        monkeypatch.setenv("STAMPEDE_SLACK_BASE_URL", f"http://127.0.0.1:{silent.getsockname()[1]}/api/")
        monkeypatch.setenv("STAMPEDE_SLACK_CHANNEL", CHANNEL)

        started = time.monotonic()
        answer = StampedeSlackHook(fallback_dir=tmp_path).post_message(text="anyone?")
        elapsed = time.monotonic() - started

    assert answer.ok is False and answer.error == "unreachable"
    assert elapsed < 15
    assert TOKEN not in all_logs.text


@pytest.mark.integration
def test_token_never_logged(env_config: SlackStandin, tmp_path: Path, all_logs, tiny_png: bytes) -> None:
    hook = StampedeSlackHook(fallback_dir=tmp_path)
    hook.post_message(text="ok")
    png = tmp_path / "c.png"
    png.write_bytes(tiny_png)
    hook.upload_file(path=png, title="c")
    env_config.errors["chat.postMessage"] = "internal_error"
    hook.post_message(text="slack error")
    env_config.stop()
    hook.post_message(text="outage")

    assert all_logs.records, "expected log lines to inspect"
    assert TOKEN not in all_logs.text
    assert TOKEN not in repr(hook) and TOKEN not in str(hook)
    assert TOKEN not in (tmp_path / FALLBACK_FILE).read_text()


# -- threads and edits --------------------------------------------------------------------------------

@pytest.mark.integration
def test_reply_in_a_thread_broadcast_and_update_the_parent(env_config: SlackStandin) -> None:
    hook = StampedeSlackHook()
    parent = hook.post_message(text="starting")

    reply = hook.post_message(text="aborted", channel=parent.channel, thread_ts=parent.ts, reply_broadcast=True)
    update = hook.update_message(channel=parent.channel, ts=parent.ts, text="PASS")

    assert reply.ok and update.ok and update.ts == parent.ts
    assert [m["text"] for m in env_config.thread(parent.channel, parent.ts)] == ["PASS", "aborted"]
    assert env_config.history(parent.channel)[-1]["subtype"] == "thread_broadcast"


@pytest.mark.integration
def test_blocks_slack_refuses_are_sent_again_as_text(env_config: SlackStandin, tmp_path: Path) -> None:
    too_many = [{"type": "divider"}] * 51

    answer = StampedeSlackHook(fallback_dir=tmp_path).post_message(text="the news", blocks=too_many)

    assert answer.ok and answer.degraded == "invalid_blocks"
    assert [m.get("blocks") for m in env_config.messages()] == [None]
    assert not (tmp_path / FALLBACK_FILE).exists()


# -- rate limits: Retry-After honoured, never a reason for the fallback file ----------------------------

@pytest.mark.integration
def test_a_rate_limit_is_waited_out_as_slack_asks(env_config: SlackStandin, tmp_path: Path) -> None:
    env_config.rate_limit(calls=2, retry_after=1)

    started = time.monotonic()
    answer = StampedeSlackHook(fallback_dir=tmp_path).post_message(text="summary", budget_s=10)
    elapsed = time.monotonic() - started

    assert answer.ok
    assert 2.0 <= elapsed < 5.0  # two waits of Retry-After: 1 s, then the third attempt
    assert [c.status for c in env_config.calls] == [429, 429, 200]
    assert not (tmp_path / FALLBACK_FILE).exists()


@pytest.mark.integration
def test_a_fractional_retry_after_is_honoured(env_config: SlackStandin) -> None:
    """slack-sdk's own handler raises ValueError on '0.5' (int('0.5')); ours waits half a second."""
    env_config.rate_limit(calls=1, retry_after="0.5")

    started = time.monotonic()
    answer = StampedeSlackHook().post_message(text="x")

    assert answer.ok and 0.5 <= time.monotonic() - started < 3


@pytest.mark.integration
def test_a_wait_past_the_budget_hands_the_message_back_unsent_and_unfiled(env_config: SlackStandin,
                                                                           tmp_path: Path) -> None:
    env_config.rate_limit(for_s=60, retry_after=30)

    started = time.monotonic()
    answer = StampedeSlackHook(fallback_dir=tmp_path).post_message(text="stage done", budget_s=5)
    elapsed = time.monotonic() - started

    assert (answer.ok, answer.error, answer.retry_after_s, answer.slow) == (False, "ratelimited", 30.0, True)
    assert elapsed < 2  # no 30 s sleep inside a 5 s budget
    assert answer.kept is None and not (tmp_path / FALLBACK_FILE).exists()  # slow is not down


@pytest.mark.integration
def test_keep_writes_a_message_given_up_on(env_config: SlackStandin, tmp_path: Path) -> None:
    answer = StampedeSlackHook(fallback_dir=tmp_path).keep({"kind": "message", "text": "late news"},
                                                          error="ratelimited", detail="still limited after 120 s")

    assert answer.kept == str(tmp_path / FALLBACK_FILE)
    assert read_fallback(tmp_path)[0]["text"] == "late news"
