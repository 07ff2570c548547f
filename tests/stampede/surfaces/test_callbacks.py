"""The task failure callback: one message per failed task, masked, and never an exception of its own."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from stampede.infra.slack_standin import SlackStandin
from stampede.surfaces.callbacks import task_failure_callback

TOKEN = "xoxb-42-callback-test-SECRET"


def airflow_context(*, exception: BaseException | None) -> dict:
    ti = SimpleNamespace(dag_id="loadtest_manual", task_id="run_stages", run_id="manual__1",
                         log_url="http://localhost:8080/dags/loadtest_manual/runs/manual__1/tasks/run_stages")
    return {"ti": ti, "dag_run": SimpleNamespace(dag_id="loadtest_manual", run_id="manual__1"),
            "exception": exception}


@pytest.fixture(autouse=True)
def no_slack_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("STAMPEDE_SLACK_TOKEN", "STAMPEDE_SLACK_BASE_URL", "STAMPEDE_SLACK_CHANNEL",
                 "AIRFLOW_CONN_SLACK_API_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    reports = tmp_path / "reports"
    monkeypatch.setenv("STAMPEDE_REPORTS_DIR", str(reports))
    return reports


@pytest.mark.integration
def test_task_failure_callback_posts(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with SlackStandin(token=TOKEN) as slack:
        monkeypatch.setenv("STAMPEDE_SLACK_TOKEN", TOKEN)
        monkeypatch.setenv("STAMPEDE_SLACK_BASE_URL", slack.base_url)
        monkeypatch.setenv("STAMPEDE_SLACK_CHANNEL", "#loadtests")

        task_failure_callback(airflow_context(exception=ValueError(f"boom with {TOKEN}")))

    (message,) = slack.messages()
    assert message["channel"] == "#loadtests"
    assert message["text"].startswith(":boom: Task loadtest_manual.run_stages failed (run manual__1): ValueError: boom")
    assert TOKEN not in json.dumps(message)
    assert TOKEN not in caplog.text


def test_task_failure_callback_without_slack_writes_fallback(no_slack_config: Path) -> None:
    task_failure_callback(airflow_context(exception=RuntimeError("disk full")))

    (entry,) = [json.loads(line) for line in (no_slack_config / "slack_messages.jsonl").read_text().splitlines()]
    assert entry["error"] == "not_configured"
    assert "RuntimeError: disk full" in entry["text"]


def test_task_failure_callback_never_raises(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    class BrokenTI:
        dag_id, task_id, run_id = "d", "t", "r"

        @property
        def log_url(self) -> str:
            raise RuntimeError("no config")

    def explode(*args, **kwargs):
        raise RuntimeError("hook exploded password=hunter2")

    monkeypatch.setattr("stampede.hooks.slack.StampedeSlackHook.post_message", explode)

    task_failure_callback({"ti": BrokenTI(), "exception": None})
    task_failure_callback({})

    assert "Slack failure notification not sent" in caplog.text
    assert "hunter2" not in caplog.text
