"""One alert per failure: the notifier's rule for who tells what, against the real Slack stand-in.

The contexts are what Airflow hands a callback (a task instance, the run, the exception); the DAG-level
and the deadline paths are exercised end to end in tests/dags/. The run's thread state lives in a real run
folder, so "already told" is read the way a later task's process reads it.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from stampede.core.errors import Refusal
from stampede.core.records import CleanupResult, GeneratorHealth, RunResult, write_results
from stampede.core.paths import Artifact
from stampede.infra.slack_standin import SlackStandin
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import Scenario, Stage
from stampede.steps import notify
from stampede.steps.verdict import RunFailed
from stampede.surfaces.callbacks import StampedeAlertNotifier, failure_alert

TOKEN = "xoxb-42-callback-test-SECRET"
RUN_ID = "scheduled__2026-05-01T02:00:00+00:00"


def airflow_context(task_id: str, exception: BaseException | None, *, channel: str | None = None) -> dict:
    ti = SimpleNamespace(dag_id="loadtest_nightly", task_id=task_id, run_id=RUN_ID,
                         log_url=f"http://localhost:8080/dags/loadtest_nightly/runs/{RUN_ID}/tasks/{task_id}")
    return {"ti": ti, "dag_run": SimpleNamespace(dag_id="loadtest_nightly", run_id=RUN_ID), "exception": exception,
            "params": {"slack_channel": channel}}


def refused(line: str) -> BaseException:
    """What the preflight task raises for a refusal (``AirflowFailException("refused: …") from Refusal``)."""
    from airflow.sdk.exceptions import AirflowFailException

    error = AirflowFailException(f"refused: {line}")
    error.__cause__ = Refusal.line(line)
    return error


@pytest.fixture(autouse=True)
def reports(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("STAMPEDE_SLACK_TOKEN", "STAMPEDE_SLACK_BASE_URL", "STAMPEDE_SLACK_CHANNEL",
                 "AIRFLOW_CONN_SLACK_API_DEFAULT"):
        monkeypatch.delenv(name, raising=False)
    root = tmp_path / "reports"
    monkeypatch.setenv("STAMPEDE_REPORTS_DIR", str(root))
    return root


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch):
    with SlackStandin(token=TOKEN) as standin:
        monkeypatch.setenv("STAMPEDE_SLACK_TOKEN", TOKEN)
        monkeypatch.setenv("STAMPEDE_SLACK_BASE_URL", standin.base_url)
        monkeypatch.setenv("STAMPEDE_SLACK_CHANNEL", "#loadtests")
        yield standin


@pytest.fixture
def started(slack: SlackStandin) -> RunPlan:
    """A run whose start message (the thread's parent) is in Slack."""
    scenario = Scenario(name="smoke", journeys={"agent": 1.0}, think_time_s=(1, 2), stages=(Stage("smoke", 5, 5, 12),))
    plan = RunPlan(run_id=RUN_ID, target="http://127.0.0.1:9/v1", environment="local", scenarios=(scenario,), workers=0,
                   dag_id="loadtest_nightly")
    notify.notify_start(plan)
    return plan


def test_the_alert_is_a_notifier_built_on_base_notifier() -> None:
    from airflow.sdk import BaseNotifier

    assert isinstance(failure_alert, BaseNotifier) and isinstance(failure_alert, StampedeAlertNotifier)
    assert hasattr(StampedeAlertNotifier, "__await__")  # what AsyncCallback (the deadline alert) requires


@pytest.mark.integration
def test_a_refused_run_produces_one_message_that_says_why(slack: SlackStandin, caplog) -> None:
    why = "target https://api.example.com/v1: belongs to production; fix: use a staging target"

    failure_alert(airflow_context("preflight", refused(why), channel="#alerts"))
    failure_alert(airflow_context("preflight", refused(why), channel="#alerts"))  # a callback run twice
    failure_alert(airflow_context("final_verdict", RuntimeError("no run: preflight refused or failed")))

    (message,) = slack.messages()
    assert message["channel"] == "#alerts" and "thread_ts" not in message  # a refused run has no thread
    assert message["text"] == (f":no_entry: Load test refused (loadtest_nightly, run {RUN_ID}): {why}. "
                               "No load was sent.")


@pytest.mark.integration
def test_a_task_failing_for_its_own_reason_alerts_once_in_the_thread(slack: SlackStandin, started: RunPlan) -> None:
    failure_alert(airflow_context("run_stages", RuntimeError(f"master died, token {TOKEN}")))
    failure_alert(airflow_context("run_stages", RuntimeError("master died")))
    failure_alert(airflow_context("final_verdict", RunFailed("no results: the load step did not finish")))

    parent = json.loads((notify.folder_for_run(RUN_ID, dag_id="loadtest_nightly").path / Artifact.SLACK_THREAD).read_text())["parent"]
    thread = slack.thread(parent["channel"], parent["ts"])
    assert len(slack.messages()) == 2  # the start message and one alert
    assert thread[1]["subtype"] == "thread_broadcast"
    assert thread[1]["text"].startswith(":boom: Task loadtest_nightly.run_stages failed")
    assert thread[0]["text"].startswith(":boom: *Failed* in `run_stages`: RuntimeError: master died")
    assert TOKEN not in json.dumps(slack.calls.__repr__()) and TOKEN not in json.dumps(thread)


@pytest.mark.integration
def test_two_tasks_failing_for_two_reasons_alert_once_each(slack: SlackStandin, started: RunPlan) -> None:
    failure_alert(airflow_context("run_stages", RuntimeError("master died")))
    failure_alert(airflow_context("cleanup_test_data", RuntimeError("cleanup: 12 entities left")))

    alerts = [m["text"] for m in slack.messages()[1:]]
    assert len(alerts) == 2
    assert alerts[0].startswith(":boom: Task loadtest_nightly.run_stages failed")
    assert alerts[1].startswith(":boom: Task loadtest_nightly.cleanup_test_data failed")


@pytest.mark.integration
def test_a_run_that_did_not_pass_is_told_by_its_summary_alone(slack: SlackStandin, started: RunPlan) -> None:
    result = RunResult(run_id=RUN_ID, scenario="smoke", target=started.target, verdict="fail", started_at="x",
                       finished_at="y", stages=[], generator=GeneratorHealth(), cleanup=CleanupResult(left=0, ok=True))
    write_results(result, notify.folder_for_run(RUN_ID, dag_id="loadtest_nightly").path / Artifact.RESULTS)
    notify.notify_summary(started)
    before = len(slack.messages())

    failure_alert(airflow_context("final_verdict", RunFailed("verdict fail (smoke: p95_ms 900 !< 200)")))

    assert len(slack.messages()) == before  # the summary said why; final_verdict's own failure is no news


@pytest.mark.integration
def test_a_verdict_nobody_told_is_told_once(slack: SlackStandin, started: RunPlan) -> None:
    result = RunResult(run_id=RUN_ID, scenario="smoke", target=started.target, verdict="pass", started_at="x",
                       finished_at="y", stages=[], generator=GeneratorHealth(), cleanup=CleanupResult(left=3, ok=True))
    write_results(result, notify.folder_for_run(RUN_ID, dag_id="loadtest_nightly").path / Artifact.RESULTS)
    failure_alert(airflow_context("notify_summary", RuntimeError("render crashed")))
    failure_alert(airflow_context("final_verdict", RunFailed("test data left on the target: 3 entities")))
    failure_alert(airflow_context("final_verdict", RunFailed("test data left on the target: 3 entities")))

    alerts = [m["text"] for m in slack.messages()[1:]]
    assert len(alerts) == 2 and "notify_summary failed" in alerts[0]
    assert "final_verdict failed" in alerts[1] and "test data left on the target: 3 entities" in alerts[1]


@pytest.mark.integration
def test_a_run_that_timed_out_is_told_by_the_dags_callback(slack: SlackStandin, started: RunPlan) -> None:
    from datetime import timedelta

    dag = SimpleNamespace(dag_id="loadtest_nightly", dagrun_timeout=timedelta(hours=28))
    run = SimpleNamespace(dag_id="loadtest_nightly", run_id=RUN_ID)

    failure_alert({"reason": "task_failure", "dag": dag, "dag_run": run, "params": {}})  # the tasks told theirs
    failure_alert({"reason": "timed_out", "dag": dag, "dag_run": run, "params": {}})

    (alert,) = slack.messages()[1:]
    assert alert["text"].startswith(":hourglass: Load test run timed out after 1 day, 4:00:00")
    assert started.run_tag in alert["text"]  # where the reaper finds what teardown could not remove


@pytest.mark.integration
def test_the_late_alert_runs_as_the_triggerer_runs_it(slack: SlackStandin, started: RunPlan) -> None:
    from airflow.triggers.callback import CallbackTrigger

    context = {"dag_run": {"dag_id": "loadtest_nightly", "dag_run_id": RUN_ID, "queued_at": "2026-05-01T02:00:00Z",
                           "conf": {}},
               "deadline": {"id": "d1", "deadline_time": "2026-05-01T03:10:00Z"}}
    trigger = CallbackTrigger(callback_path="stampede.surfaces.callbacks.StampedeAlertNotifier",
                              callback_kwargs={"context": context})

    async def events() -> list:
        return [event.payload async for event in trigger.run()]

    states = [e["state"] for e in asyncio.run(events())]

    assert states[-1] == "success", states
    (late,) = slack.messages()[1:]
    assert late["text"].startswith(":turtle: Load test run is late (loadtest_nightly") and late["reply_broadcast"]


def test_without_slack_the_alert_is_kept_in_the_run_folder(reports: Path) -> None:
    failure_alert(airflow_context("validate", RuntimeError("disk full")))

    (entry,) = [json.loads(line) for line in
                (notify.folder_for_run(RUN_ID, dag_id="loadtest_nightly").path / "slack_messages.jsonl").read_text().splitlines()]
    assert entry["error"] == "not_configured"
    assert "RuntimeError: disk full" in entry["text"]


def test_the_alert_never_raises(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    class BrokenTI:
        dag_id, task_id, run_id = "d", "t", "r"

        @property
        def log_url(self) -> str:
            raise RuntimeError("no config")

    def explode(*args, **kwargs):
        raise RuntimeError("hook exploded password=hunter2")

    monkeypatch.setattr("stampede.steps.notify.notify_alert", explode)

    failure_alert({"ti": BrokenTI(), "exception": None})
    failure_alert({})

    assert "Slack failure notification not sent" in caplog.text
    assert "hunter2" not in caplog.text
