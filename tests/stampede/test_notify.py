"""Slack messages built from plain run records, and the Airflow failure callback."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import pytest

from stampede.infra.slack_standin import SlackStandin
from stampede.render import slack as notify
from stampede.render.slack import (
    Message,
    abort_message,
    failure_message,
    redact,
    stage_message,
    start_message,
    summary_message,
    task_failure_callback,
)
from stampede.plan.run_plan import RunPlan
from stampede.core.records import Check, CleanupResult, GeneratorHealth, RunResult, StageResult
from stampede.plan.scenario import Scenario, Stage, Thresholds

TOKEN = "xoxb-42-notify-test-SECRET"


def all_text(message: Message) -> str:
    return message.text + "\n" + json.dumps(message.blocks, ensure_ascii=False)


def block_texts(message: Message) -> list[str]:
    texts = []
    for block in message.blocks:
        if "text" in block:
            texts.append(block["text"]["text"])
        texts.extend(e["text"] for e in block.get("elements", []))
    return texts


def assert_valid_blocks(message: Message) -> None:
    assert 0 < len(message.blocks) <= 50
    for block in message.blocks:
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text" and len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert len(block["text"]["text"]) <= 3000


def make_stage(name: str = "hold", *, passed: bool = True, **figures) -> StageResult:
    checks = [
        Check(metric="p95_ms", op="<", threshold=200, value=figures.get("p95_ms", 180.0), passed=passed),
        Check(metric="error_rate", op="<", threshold=0.01, value=figures.get("error_rate", 0.002), passed=True),
    ]
    return StageResult(
        name=name, scenario="normal", users=figures.get("users", 1000), duration_s=600, requests=90_000,
        failures=180, rps=figures.get("rps", 150.25), p50_ms=12.0, p95_ms=figures.get("p95_ms", 180.0),
        p99_ms=420.0, max_ms=900.0, error_rate=figures.get("error_rate", 0.002), checks=checks, passed=passed,
    )


def make_results(**overrides) -> dict:
    result = RunResult(
        run_id="manual__2026-05-01T02:00:00", scenario="normal", target="https://staging.example/v1",
        verdict="pass", started_at="2026-05-01T02:00:00Z", finished_at="2026-05-01T02:20:00Z",
        stages=[make_stage("ramp"), make_stage("hold")],
        generator=GeneratorHealth(cpu_max_pct=41.0), cleanup=CleanupResult(created=120, deleted=120, left=0),
    ).to_dict()
    result.update(overrides)
    return result


# -- redact ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        pytest.param("Authorization: Bearer eyJhbGciOi.abc-def", "Authorization: Bearer ***", id="bearer"),
        pytest.param("token xoxb-123-456-AbC", "token xoxb-***", id="xoxb"),
        pytest.param("user token xoxp-9-8-7", "user token xoxp-***", id="xoxp"),
        pytest.param("login password=hunter2 user=bob", "login password=*** user=bob", id="password-pair"),
        pytest.param('{"password": "hunter2", "n": 1}', '{"password": "***", "n": 1}', id="json-password"),
        pytest.param("?access_token=abc&page=2", "?access_token=***&page=2", id="query-token"),
        pytest.param("postgres://app:s3cret@db:5432/x", "postgres://app:***@db:5432/x", id="url-credentials"),
        pytest.param("p95 was 250 ms, invalid token provided", "p95 was 250 ms, invalid token provided", id="prose"),
        pytest.param("login failed: password=hunter2", "login failed: password=***", id="pair-after-colon"),
        pytest.param("password=\"unterminated rest", "password=\"*** rest", id="unterminated-quote"),
        pytest.param("```password=hunter2```", "```password=***```", id="inside-code-block"),
        pytest.param("<https://x.example/?token=abc|Open>", "<https://x.example/?token=***|Open>", id="inside-link"),
    ],
)
def test_redact(raw: str, masked: str) -> None:
    assert redact(raw) == masked
    assert redact(masked) == masked


def test_redact_is_linear_on_long_text() -> None:
    started = time.perf_counter()
    for text in ("x" * 100_000, "a:" * 50_000, "a.b" * 30_000, "password=" * 10_000):
        redact(text)

    assert time.perf_counter() - started < 2


# -- builders -------------------------------------------------------------------------------

def test_start_message_from_a_run_plan() -> None:
    scenario = Scenario(
        name="normal", journeys={"agent": 1.0}, think_time_s=(3, 8),
        stages=(Stage("ramp", 1000, 10, 300), Stage("hold", 1000, 10, 600)),
        thresholds=Thresholds(p95_ms=200),
    )
    peak = Scenario(
        name="peak", journeys={"agent": 1.0}, think_time_s=(3, 8), stages=(Stage("peak", 2500, 20, 600),),
    )
    plan = RunPlan(run_id="nightly__2026-05-01", target="https://staging.example/v1", environment="staging",
                   scenarios=(scenario, peak), workers=2)

    message = start_message(plan.to_dict())

    assert message.text == (
        ":rocket: Load test starting: normal → peak on staging (https://staging.example/v1), "
        "peak 2,500 users for 25 min. Run nightly__2026-05-01"
    )
    text = all_text(message)
    for expected in ("normal → peak", "https://staging.example/v1", "staging", "2,500", "25 min", "3 stages",
                     "nightly__2026-05-01"):
        assert expected in text
    assert_valid_blocks(message)
    with_planned = start_message(plan.to_dict() | {"stages": [asdict(s) for s in plan.stages]})
    assert with_planned.text == message.text


def test_stage_message_passed() -> None:
    message = stage_message(make_stage("hold").__dict__ | {"checks": []})

    assert message.text.startswith(":white_check_mark: Stage hold passed: 1,000 users · 150.2 req/s")
    assert "p50 12 ms · p95 180 ms · p99 420 ms · errors 0.20%" in message.text
    assert "90,000 requests, 180 failed, over 10 min" in all_text(message)
    assert_valid_blocks(message)


def test_stage_message_failed_names_the_breached_check() -> None:
    message = stage_message(asdict(make_stage("hold", passed=False, p95_ms=312.0)))

    assert message.text.startswith(":x: Stage hold failed")
    assert "breached: p95 312 ms (must be &lt; 200 ms)" in message.text
    assert "errors" not in message.text.split("breached:")[1]  # the passing check is not listed


def test_abort_message() -> None:
    message = abort_message("run-7", "p95 1200 ms > 1000 ms (abort threshold)")

    assert message.text == ":octagonal_sign: Load test aborted (run run-7): p95 1200 ms &gt; 1000 ms (abort threshold)"
    assert "p95 1200 ms &gt; 1000 ms" in block_texts(message)[1]  # escaped for mrkdwn
    assert_valid_blocks(message)


def test_failure_message_trims_and_masks() -> None:
    long_error = RuntimeError("connect failed: password=hunter2 " + "x" * 5000)

    message = failure_message(dag_id="loadtest_nightly", task_id="run_stages", run_id="r1",
                              log_url="http://airflow:8080/dags/loadtest_nightly/runs/r1/tasks/run_stages",
                              exception=long_error)

    text = all_text(message)
    assert "hunter2" not in text
    assert "RuntimeError: connect failed: password=***" in message.text
    code = message.blocks[1]["text"]["text"]
    assert code.startswith("```RuntimeError: connect failed: password=*** x") and code.endswith("…```")
    assert len(message.text) < 2000
    assert "<http://airflow:8080/dags/loadtest_nightly/runs/r1/tasks/run_stages|Open the task log>" in text
    assert message.blocks[0]["text"]["text"] == ":boom: Task failed: loadtest_nightly.run_stages"
    assert_valid_blocks(message)


def test_failure_message_without_exception_or_log() -> None:
    message = failure_message(dag_id="d", task_id="t", run_id="r", log_url=None, exception=None)

    assert "(no exception recorded)" in message.text
    assert "No log link" in all_text(message)


def test_summary_pass() -> None:
    message = summary_message(make_results(), report_url="https://reports.example/r1/index.html")

    assert message.text.startswith(":white_check_mark: Load test PASS: normal on https://staging.example/v1, 2/2")
    header = message.blocks[0]
    assert header["type"] == "header" and header["text"]["text"].startswith(":white_check_mark: Load test PASS")
    texts = block_texts(message)
    stage_lines = [t for t in texts if "*ramp*" in t or "*hold*" in t]
    assert stage_lines == [
        ":white_check_mark: *ramp*: 1,000 users · 150.2 req/s · p50 12 ms · p95 180 ms · p99 420 ms · errors 0.20%",
        ":white_check_mark: *hold*: 1,000 users · 150.2 req/s · p50 12 ms · p95 180 ms · p99 420 ms · errors 0.20%",
    ]
    assert ":broom: Cleanup: 120 created, 120 deleted, 0 left" in texts
    assert "<https://reports.example/r1/index.html|Open the report>" in all_text(message)
    assert "generator CPU max 41%" in all_text(message)
    assert "CLEANUP INCOMPLETE" not in all_text(message)
    assert_valid_blocks(message)


def test_summary_fail_lists_failing_checks() -> None:
    results = make_results(verdict="fail", stages=[asdict(make_stage("ramp")),
                                                   asdict(make_stage("hold", passed=False, p95_ms=312.0))])

    message = summary_message(results, report_url=None)

    assert message.text.startswith(":x: Load test FAIL: normal on https://staging.example/v1, 1/2 stages passed")
    assert "hold FAIL (p95 312 ms" in message.text
    hold = next(t for t in block_texts(message) if "*hold*" in t)
    assert hold.startswith(":x: *hold*")
    assert "breached: p95 312 ms (must be &lt; 200 ms)" in hold
    assert "No report link" in all_text(message)


def test_summary_invalid_and_aborted() -> None:
    results = make_results(
        verdict="invalid", aborted=True, stopped={"reason": "kill switch set", "kind": "kill_switch"},
        generator={"cpu_max_pct": 97.0, "saturated": True},
    )

    message = summary_message(results, report_url=None)

    text = all_text(message)
    assert message.blocks[0]["text"]["text"].startswith(":warning: Load test INVALID")
    assert "*Aborted early* (kill_switch): kill switch set" in text
    assert "Load generator saturated* (CPU max 97%)" in text
    assert "generator saturated (CPU max 97%)" in message.text


@pytest.mark.parametrize(
    ("cleanup", "expected"),
    [
        pytest.param({"created": 50, "deleted": 38, "left": 12, "ok": True, "error": None},
                     "*12 test entities are still on the target*", id="left"),
        pytest.param({"created": 50, "deleted": 0, "left": 0, "ok": False, "error": "403 Forbidden"},
                     "Cleanup failed: 403 Forbidden", id="failed"),
    ],
)
def test_summary_is_loud_about_cleanup(cleanup: dict, expected: str) -> None:
    message = summary_message(make_results(cleanup=cleanup), report_url=None)

    line = next(t for t in block_texts(message) if "Cleanup" in t or "CLEANUP" in t)
    assert line.startswith(":rotating_light: *CLEANUP INCOMPLETE*")
    assert expected in line
    assert "CLEANUP INCOMPLETE" in message.text


def test_summary_escapes_and_stays_within_slack_limits() -> None:
    stages = [asdict(make_stage(f"step-{i}")) for i in range(80)]
    message = summary_message(make_results(scenario="<!channel> & co", stages=stages), report_url=None)

    assert_valid_blocks(message)
    mrkdwn = block_texts(message)[1:]  # the header is plain_text: Slack parses no mentions there
    assert message.blocks[0]["type"] == "header"
    assert not [t for t in mrkdwn + [message.text] if "<!channel>" in t]
    assert "&lt;!channel&gt; &amp; co" in message.text
    assert "more stages in the report" in all_text(message)


def test_summary_with_empty_results_does_not_crash() -> None:
    message = summary_message({}, report_url=None)

    assert "INVALID" in message.text
    assert_valid_blocks(message)


def test_message_is_frozen() -> None:
    message = abort_message("r", "x")
    with pytest.raises(AttributeError):
        message.text = "changed"  # type: ignore[misc]


# -- task_failure_callback ------------------------------------------------------------------

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


def test_notify_has_an_explicit_public_surface() -> None:
    assert set(notify.__all__) == {
        "Message", "abort_message", "failure_message", "redact", "stage_message", "start_message",
        "summary_message", "task_failure_callback",
    }
