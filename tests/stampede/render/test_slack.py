"""Slack messages built from typed run records, within Slack's Block Kit limits, and the one redaction they share.

Every message a builder returns is checked by the Slack stand-in's rules (what Slack refuses, the stand-in
refuses) and by slack-sdk's own Block Kit models.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from stampede.core import fmt
from stampede.core.redact import text as redact
from stampede.core.records import (
    Breach,
    Check,
    CleanupResult,
    Comparison,
    CostRecord,
    Finding,
    GeneratorHealth,
    Regression,
    RunResult,
    StageComparison,
    StageResult,
    Stop,
)
from stampede.core.stops import StopKind
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import Scenario, Stage, Thresholds
from stampede.infra.slack_standin import block_errors
from stampede.render import slack as notify
from stampede.render.slack import (
    ACTION_OPEN_REPORT,
    ACTION_PIN,
    ACTION_RERUN,
    Message,
    abort_message,
    button_value,
    failure_message,
    late_message,
    parse_button_value,
    refusal_message,
    stage_message,
    start_message,
    summary_broadcast,
    summary_message,
    timed_out_message,
    with_status,
)


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
    """What Slack would take: the stand-in's rules (Slack's limits) and slack-sdk's Block Kit models."""
    from slack_sdk.models.blocks import Block

    assert 0 < len(message.blocks) <= 50
    assert block_errors(message.blocks) == (None, [])
    for block in Block.parse_all([b for b in message.blocks if b["type"] != "table"]):
        block.validate_json()
    assert len(message.text) <= 40_000


def table_of(message: Message) -> list[list[str]]:
    (table,) = [b for b in message.blocks if b["type"] == "table"]
    return [[cell["text"] for cell in row] for row in table["rows"]]


def buttons_of(message: Message) -> dict[str, dict]:
    return {e["action_id"]: e for b in message.blocks if b["type"] == "actions" for e in b["elements"]}


def make_stage(name: str = "hold", *, passed: bool = True, p95_ms: float = 180.0, duration_s: float = 600,
               checks: bool = True) -> StageResult:
    return StageResult(
        name=name, scenario="normal", users=1000, duration_s=duration_s, requests=90_000,
        failures=180, rps=150.25, p50_ms=12.0, p95_ms=p95_ms, p99_ms=420.0, max_ms=900.0, error_rate=0.002,
        checks=[
            Check(metric="p95_ms", op="<", threshold=200, value=p95_ms, passed=passed),
            Check(metric="error_rate", op="<", threshold=0.01, value=0.002, passed=True),
        ] if checks else [],
        passed=passed,
    )


def make_results(**overrides) -> RunResult:
    result = RunResult(
        run_id="manual__2026-05-01T02:00:00", scenario="normal", target="https://staging.example/v1",
        verdict="pass", started_at="2026-05-01T02:00:00Z", finished_at="2026-05-01T02:20:00Z",
        stages=[make_stage("ramp"), make_stage("hold")], run_tag="LT-manual20260501T020000",
        generator=GeneratorHealth(cpu_max_pct=41.0), cleanup=CleanupResult(created=120, deleted=120, left=0, ok=True),
    )
    return replace(result, **overrides)


# -- redaction (stampede.core.redact: every message goes through it) --------------------------

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

    message = start_message(plan)

    assert message.text == (
        ":rocket: Load test starting: normal → peak on staging (https://staging.example/v1), "
        "peak 2,500 users for 25 min. Run nightly__2026-05-01"
    )
    text = all_text(message)
    for expected in ("normal → peak", "https://staging.example/v1", "staging", "2,500", "25 min", "3 stages",
                     "nightly__2026-05-01"):
        assert expected in text
    assert_valid_blocks(message)


def test_start_message_hides_credentials_in_the_target() -> None:
    scenario = Scenario(name="normal", journeys={"agent": 1.0}, think_time_s=(3, 8), stages=(Stage("s", 10, 10, 60),))
    plan = RunPlan(run_id="r", target="https://loadtest:hunter2@staging.example/v1", environment="staging",
                   scenarios=(scenario,), workers=0)

    text = all_text(start_message(plan))

    assert "hunter2" not in text and "https://***@staging.example/v1" in text


def test_stage_message_passed() -> None:
    message = stage_message(make_stage("hold", checks=False))

    assert message.text.startswith(":white_check_mark: Stage hold passed: 1,000 users · 150.2 req/s")
    assert "p50 12 ms · p95 180 ms · p99 420 ms · errors 0.20%" in message.text
    assert "90,000 requests, 180 failed, over 10 min" in all_text(message)
    assert_valid_blocks(message)


def test_stage_message_failed_names_the_breached_check() -> None:
    message = stage_message(make_stage("hold", passed=False, p95_ms=312.0))

    assert message.text.startswith(":x: Stage hold failed")
    assert "breached: p95 312 ms (must be &lt; 200 ms)" in message.text
    assert "errors" not in message.text.split("breached:")[1]  # the passing check is not listed


@pytest.mark.parametrize(
    ("stop", "words"),
    [
        pytest.param(Stop(reason="kill switch set by ana", kind=StopKind.KILL_SWITCH),
                     "kill switch set by ana (the kill switch was set", id="kill-switch"),
        pytest.param(Stop(reason="GET /health: 503", kind=StopKind.TARGET_UNHEALTHY),
                     "GET /health: 503 (the target failed its health check between stages", id="target-down"),
    ],
)
def test_abort_message_says_why_and_what_the_kind_of_stop_means(stop: Stop, words: str) -> None:
    message = abort_message("run-7", stop)

    assert message.text.startswith(f":octagonal_sign: Load test stopped early (run run-7): {words}")
    assert f"`{stop.kind}`" in block_texts(message)[-1]
    assert_valid_blocks(message)


def test_abort_message_shows_the_breach_escaped() -> None:
    breach = Breach(stage="hold", metric="p95_ms", threshold=1000.0, value=1200.0, at=0.0, window_s=10)
    message = abort_message("run-7", Stop(reason="p95 1200 ms > 1000 ms in <hold>", kind=StopKind.ABORT, breach=breach))

    assert "p95 1200 ms &gt; 1000 ms in &lt;hold&gt;" in message.text  # escaped for mrkdwn
    assert "*Breach* in hold: p95 1,200 ms over 10 s (threshold 1,000 ms)" in block_texts(message)[1]


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
    assert table_of(message) == [
        ["Stage", "Users", "Req/s", "p50 ms", "p95 ms", "p99 ms", "Errors", "Result"],
        ["ramp", "1,000", "150.2", "12", "180", "420", "0.20%", "pass"],
        ["hold", "1,000", "150.2", "12", "180", "420", "0.20%", "pass"],
    ]
    assert ":broom: Cleanup: 120 created, 120 deleted, 0 left" in texts
    assert "<https://reports.example/r1/index.html|Open the report>" in all_text(message)
    assert "generator CPU max 41%" in all_text(message)
    assert "CLEANUP INCOMPLETE" not in all_text(message)
    assert_valid_blocks(message)


def test_summary_fail_lists_failing_checks() -> None:
    results = make_results(verdict="fail", stages=[make_stage("ramp"), make_stage("hold", passed=False, p95_ms=312.0)])

    message = summary_message(results, report_url=None)

    assert message.text.startswith(":x: Load test FAIL: normal on https://staging.example/v1, 1/2 stages passed")
    assert "hold FAIL (p95 312 ms" in message.text
    assert table_of(message)[2] == ["hold", "1,000", "150.2", "12", "312", "420", "0.20%", "FAIL"]
    hold = next(t for t in block_texts(message) if "*hold*" in t)
    assert hold == ":x: *hold* breached: p95 312 ms (must be &lt; 200 ms)"
    assert "No report link" in all_text(message)


def test_summary_invalid_and_aborted() -> None:
    results = make_results(
        verdict="invalid", aborted=True, stopped=Stop(reason="kill switch set", kind=StopKind.KILL_SWITCH),
        generator=GeneratorHealth(cpu_max_pct=97.0, saturated=True, workers=1, recommended_workers=3),
    )

    message = summary_message(results, report_url=None)

    text = all_text(message)
    assert message.blocks[0]["text"]["text"].startswith(":warning: Load test INVALID")
    assert "*Aborted early*: kill switch set (the kill switch was set: the figures end early" in text
    assert "Load generator saturated* (CPU max 97%)" in text and "use 3 workers (2 more)" in text
    assert "generator saturated (CPU max 97%)" in message.text


@pytest.mark.parametrize(
    ("cleanup", "problem", "expected"),
    [
        pytest.param(CleanupResult(created=50, deleted=38, left=12, ok=True), "12 test entities left",
                     "(50 created, 38 deleted, 12 left)", id="left"),
        pytest.param(CleanupResult(created=50, deleted=0, left=0, ok=False, error="403 Forbidden"),
                     "cleanup reported errors, though it counted none left", "Cleanup failed: 403 Forbidden",
                     id="failed"),
        pytest.param(CleanupResult(created=50), "unknown how many test entities are left",
                     "(50 created, 0 deleted, unknown left)", id="never-ran"),
        pytest.param(CleanupResult(created=50, left=-1, ok=False, error="ConnectError: refused"),
                     "unknown how many test entities are left", "Cleanup failed: ConnectError: refused",
                     id="failed-before-counting"),
    ],
)
def test_a_pass_that_left_test_data_says_what_was_left_first_and_never_pass(cleanup, problem, expected) -> None:
    message = summary_message(make_results(cleanup=cleanup), report_url=None)

    header, first = message.blocks[0]["text"]["text"], block_texts(message)[1]
    assert header.startswith(f":rotating_light: CLEANUP INCOMPLETE: {problem} · load test thresholds met: normal")
    assert first.startswith(f":rotating_light: *CLEANUP INCOMPLETE: {problem}*") and expected in first
    assert "delete it by the run tag `LT-manual20260501T020000`" in first
    assert message.text.startswith(f":rotating_light: CLEANUP INCOMPLETE: {problem} · load test thresholds met")
    assert "PASS" not in all_text(message) and ":white_check_mark: Load test" not in all_text(message)


def test_a_fail_that_left_test_data_says_so_before_the_verdict() -> None:
    message = summary_message(make_results(verdict="fail", cleanup=CleanupResult(left=3, ok=True)), report_url=None)

    assert message.blocks[0]["text"]["text"].startswith(
        ":rotating_light: CLEANUP INCOMPLETE: 3 test entities left · :x: Load test FAIL: normal")


def test_summary_escapes_and_stays_within_slack_limits() -> None:
    stages = [make_stage(f"step-{i}") for i in range(150)]
    message = summary_message(make_results(scenario="<!channel> & co", stages=stages), report_url=None)

    assert_valid_blocks(message)
    mrkdwn = block_texts(message)[1:]  # the header is plain_text: Slack parses no mentions there
    assert message.blocks[0]["type"] == "header"
    assert not [t for t in mrkdwn + [message.text] if "<!channel>" in t]
    assert "&lt;!channel&gt; &amp; co" in message.text
    rows = table_of(message)
    assert len(rows) == 100 and rows[-1][0] == "… 52 more stages in the report"  # 1 header + 98 stages + 1


def test_summary_of_a_run_without_stages_does_not_crash() -> None:
    message = summary_message(make_results(verdict="invalid", stages=[]), report_url=None)

    assert "INVALID" in message.text and "No stage produced figures" in all_text(message)
    assert_valid_blocks(message)


def test_summary_shows_cost_baseline_and_top_bottleneck() -> None:
    comparison = Comparison(
        verdict="regressed", baseline_run_id="nightly-0",
        regressions=[Regression(stage="hold", endpoint="GET /listings", why="p95 100 → 400 ms")],
        stages=[StageComparison(name="hold", p95_ms=400.0, baseline_p95_ms=100.0, rps=150.0, baseline_rps=149.0)])
    results = make_results(
        cost=CostRecord(provider="ecs", workers=2, size="fargate-1vcpu-2gb", estimate_usd=0.0512, actual_usd=1.5),
        comparison=comparison,
        bottlenecks=[Finding("resource_saturated", "database pool", "Database pool exhausted", ["8/8 in use"])])

    text = all_text(summary_message(results, report_url=None))

    assert ":moneybag: Cost: 1.50 USD actual (estimate 0.0512 USD), 2 ecs workers fargate-1vcpu-2gb" in text
    assert "*Baseline*: REGRESSED vs run `nightly-0`" in text and "*GET /listings* in hold" in text
    assert "hold: p95 100 ms → 400 ms, 149.0 → 150.0 req/s" in text
    assert ":mag: *Top bottleneck*: Database pool exhausted: 8/8 in use" in text


def test_a_long_run_with_every_section_keeps_its_last_block_within_the_limit() -> None:
    results = make_results(
        stages=[make_stage(f"step-{i}", passed=False, p95_ms=900.0) for i in range(80)],
        generator=GeneratorHealth(cpu_max_pct=97.0, saturated=True),
        cost=CostRecord(provider="ecs", workers=2, size="fargate-1vcpu-2gb"),
        comparison=Comparison(verdict="unchanged", baseline_run_id="nightly-0"),
        bottlenecks=[Finding("resource_saturated", "database pool", "Database pool exhausted", ["8/8 in use"])])

    message = summary_message(results, report_url=None)

    assert_valid_blocks(message)
    assert message.blocks[-1]["type"] == "context" and "Run `manual__2026-05-01T02:00:00`" in block_texts(message)[-1]


def test_durations_read_as_in_the_report() -> None:
    message = stage_message(make_stage("hold", duration_s=125))

    assert f"over {fmt.duration(125)}" in all_text(message) and fmt.duration(125) == "2 min 5 s"


def test_message_is_frozen() -> None:
    message = abort_message("r", Stop(reason="x", kind=StopKind.ABORT))
    with pytest.raises(AttributeError):
        message.text = "changed"  # type: ignore[misc]


def test_notify_has_an_explicit_public_surface() -> None:
    assert set(notify.__all__) == {
        "ACTION_OPEN_REPORT", "ACTION_PIN", "ACTION_RERUN", "ButtonValue", "Message", "abort_message", "action_reply",
        "button_value", "failure_message", "late_message", "parse_button_value", "refusal_message", "stage_message",
        "start_message", "summary_broadcast", "summary_message", "timed_out_message", "with_status",
    }
    assert not hasattr(notify, "redact") and not hasattr(notify, "task_failure_callback")


# -- the table, the buttons, the broadcast, the alerts ---------------------------------------------------

def test_the_summarys_buttons_open_the_report_re_run_and_pin() -> None:
    message = summary_message(make_results(), report_url="https://reports.example/LT-x/report.html",
                              dag_id="loadtest_nightly")

    buttons = buttons_of(message)
    assert set(buttons) == {ACTION_OPEN_REPORT, ACTION_RERUN, ACTION_PIN}
    assert buttons[ACTION_OPEN_REPORT]["url"] == "https://reports.example/LT-x/report.html"
    for action in (ACTION_RERUN, ACTION_PIN):
        assert parse_button_value(buttons[action]["value"]) == notify.ButtonValue("loadtest_nightly",
                                                                                   "manual__2026-05-01T02:00:00")
        assert buttons[action]["confirm"]["confirm"]["text"] in ("Re-run", "Pin")
    assert_valid_blocks(message)


def test_without_a_dag_or_an_http_report_there_is_nothing_to_press() -> None:
    message = summary_message(make_results(), report_url="file:///tmp/reports/LT-x/report.html")

    assert buttons_of(message) == {}  # Slack refuses file:// links, and a CLI run has no DAG to re-run
    assert "<file:///tmp/reports/LT-x/report.html|Open the report>" in all_text(message)
    assert_valid_blocks(message)


@pytest.mark.parametrize("value", [None, "", "{}", "not json", '{"run_id": "r"}'])
def test_a_button_value_that_is_not_ours_is_refused(value) -> None:
    with pytest.raises(ValueError):
        parse_button_value(value)


def test_button_values_stay_within_slacks_limit() -> None:
    assert parse_button_value(button_value("d", "r" * 250)).run_id == "r" * 250
    with pytest.raises(ValueError):
        button_value("d", "r" * 2000)


def test_the_broadcast_is_short_and_its_text_is_the_whole_summary() -> None:
    results = make_results(verdict="fail", stages=[make_stage("ramp"), make_stage("hold", passed=False, p95_ms=312.0)])

    broadcast = summary_broadcast(results, report_url="https://reports.example/r/report.html")
    summary = summary_message(results, report_url="https://reports.example/r/report.html")

    assert broadcast.text == summary.text
    assert [b["type"] for b in broadcast.blocks] == ["section", "context"]
    assert block_texts(broadcast)[0] == ("*:x: Load test FAIL*: normal · 1/2 stages passed · "
                                         "<https://reports.example/r/report.html|report>")
    assert_valid_blocks(broadcast)


def test_a_summary_says_which_messages_did_not_reach_slack() -> None:
    note = "2 message(s) of this run did not reach Slack (unreachable); they are in `slack_messages.jsonl`"

    message = summary_message(make_results(), report_url=None, delivery_note=note)

    assert f":warning: {note}" in block_texts(message)
    assert note in message.text


def test_the_parent_can_say_what_became_of_the_run() -> None:
    scenario = Scenario(name="smoke", journeys={"agent": 1.0}, think_time_s=(1, 2), stages=(Stage("s", 5, 5, 12),))
    start = start_message(RunPlan(run_id="r", target="http://127.0.0.1:1/v1", environment="local",
                                  scenarios=(scenario,), workers=0))

    failed = with_status(start, ":boom: *Failed* in `run_stages`: RuntimeError")
    again = with_status(failed, ":hourglass: *Timed out*")

    assert block_texts(failed)[0] == ":boom: *Failed* in `run_stages`: RuntimeError"
    assert block_texts(again)[0] == ":hourglass: *Timed out*" and len(again.blocks) == len(failed.blocks)
    assert_valid_blocks(again)


def test_the_alerts_say_why_in_one_message() -> None:
    refused = refusal_message(dag_id="loadtest_manual", run_id="r1",
                              reason="target https://api.example.com/v1: is production; fix: use staging")
    timed_out = timed_out_message(dag_id="loadtest_nightly", run_id="r2", timeout="1 day, 4:00:00", run_tag="LT-r2")
    late = late_message(dag_id="loadtest_nightly", run_id="r3", queued_at="02:00", deadline="03:10")

    assert refused.text == (":no_entry: Load test refused (loadtest_manual, run r1): target https://api.example.com/v1: "
                            "is production; fix: use staging. No load was sent.")
    assert "`LT-r2`" in timed_out.text and "1 day, 4:00:00" in timed_out.text
    assert "past its deadline 03:10" in late.text
    for message in (refused, timed_out, late):
        assert_valid_blocks(message)


def test_a_table_that_would_break_slacks_aggregate_limit_loses_rows_not_the_message() -> None:
    stages = [make_stage(f"endurance-{'x' * 60}-{i}", passed=False, p95_ms=900.0) for i in range(99)]

    message = summary_message(make_results(stages=stages, verdict="fail"), report_url=None, dag_id="loadtest_manual")

    rows = table_of(message)
    assert 4 <= len(rows) < 100 and rows[-1][0].endswith("more stages in the report")
    assert int(rows[-1][0].split()[1]) == 99 - (len(rows) - 2)  # every stage is either a row or counted
    assert notify._text_size(message.blocks) <= notify.BLOCKS_TEXT_BUDGET
    assert buttons_of(message)  # the buttons survive the trimming
    assert_valid_blocks(message)


# -- drift (a warning next to the stages' verdicts) -----------------------------------------------------

def _drift(count: int):
    from stampede.core.records import Drift, DriftFinding

    return Drift(stages=["hold"], interval_s=3600, findings=[
        DriftFinding(kind="server", stage="hold", subject="memory_mib", metric="MiB", started_at=0.0,
                     start_offset_s=3600.0 * (5 + i), start_hour=5 + i,
                     title=f"the target's memory_mib grew 42 % (300 → 426 MiB) from hour {5 + i} of hold and did not fall back <b>")
        for i in range(count)])


def test_the_summary_names_drift_with_its_hour_and_keeps_the_verdict() -> None:
    message = summary_message(make_results(drift=_drift(1)), report_url="https://reports.example/r.html")
    assert_valid_blocks(message)
    texts = block_texts(message)
    at = next(i for i, t in enumerate(texts) if "Drift over time" in t)
    assert "from hour 5 of hold" in texts[at] and "&lt;b&gt;" in texts[at] and "<b>" not in texts[at]
    assert at < next(i for i, t in enumerate(texts) if "Open the report" in t)
    assert "PASS" in message.text
    assert "drift: 1 finding" in message.text


def test_many_drift_findings_are_capped_and_none_says_nothing() -> None:
    texts = block_texts(summary_message(make_results(drift=_drift(7)), report_url=None))
    drift = next(t for t in texts if "Drift over time" in t)
    assert drift.count("•") == notify.MAX_DRIFT_LINES and "3 more in the report" in drift
    for drift_record in (None, _drift(0)):
        message = summary_message(make_results(drift=drift_record), report_url=None)
        assert not any("Drift" in t for t in block_texts(message)) and "drift" not in message.text
