"""The notify step: one Slack thread per run, live, in order, and nothing lost while Slack is merely slow.

Real slack-sdk client, real provider hook, real Slack stand-in (which enforces Slack's limits, answers 429
and 503 on demand and keeps the thread to read back). The plan and results are typed records written to a
real run folder.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from stampede.core.paths import Artifact
from stampede.core.records import CleanupResult, GeneratorHealth, RunResult, StageResult, Stop, write_results
from stampede.core.stops import StopKind
from stampede.infra.slack_standin import SlackStandin
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import Scenario, Stage, Thresholds
from stampede.render.slack import ACTION_PIN, ACTION_RERUN, failure_message
from stampede.steps import notify

pytestmark = pytest.mark.integration

TOKEN = "xoxb-notify-test-SECRET"
CHANNEL = "#loadtests"
RUN_ID = "manual__2026-05-01T02:00:00+00:00"


def stage(name: str, *, passed: bool = True) -> StageResult:
    return StageResult(name=name, scenario="normal", users=50, duration_s=20, requests=900, failures=0, rps=45.0,
                       p50_ms=4.0, p95_ms=9.0, p99_ms=14.0, max_ms=30.0, error_rate=0.0, passed=passed)


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("STAMPEDE_REPORTS_DIR", str(tmp_path / "reports"))
    for name in ("STAMPEDE_SLACK_TOKEN", "STAMPEDE_SLACK_BASE_URL", "STAMPEDE_SLACK_CHANNEL",
                 "AIRFLOW_CONN_SLACK_API_DEFAULT", "STAMPEDE_REPORTS_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "reports"


@pytest.fixture
def slack(reports: Path, monkeypatch: pytest.MonkeyPatch):
    with SlackStandin(token=TOKEN) as standin:
        monkeypatch.setenv("STAMPEDE_SLACK_TOKEN", TOKEN)
        monkeypatch.setenv("STAMPEDE_SLACK_BASE_URL", standin.base_url)
        monkeypatch.setenv("STAMPEDE_SLACK_CHANNEL", CHANNEL)
        yield standin


@pytest.fixture
def plan(reports: Path) -> RunPlan:
    scenario = Scenario(name="normal", journeys={"agent": 1.0}, think_time_s=(1, 2),
                        stages=(Stage("ramp", 50, 5, 20), Stage("hold", 50, 5, 40)), thresholds=Thresholds(p95_ms=200))
    return RunPlan(run_id=RUN_ID, target="http://127.0.0.1:9/v1", environment="local", scenarios=(scenario,), workers=0)


def folder(plan: RunPlan) -> Path:
    return Path(notify.folder_of(plan).path)


PNG = b"\x89PNG\r\n\x1a\n"  # enough of a chart for a file upload


def finish(plan: RunPlan, *stages: StageResult, stopped: Stop | None = None, chart: bool = True) -> RunResult:
    """What validate and report leave in the run folder: results.json, and the chart."""
    result = RunResult(run_id=plan.run_id, scenario="normal", target=plan.target, verdict="pass",
                       started_at="2026-05-01T02:00:00Z", finished_at="2026-05-01T02:01:00Z", stages=list(stages),
                       run_tag=plan.run_tag, generator=GeneratorHealth(cpu_max_pct=12.0),
                       cleanup=CleanupResult(created=10, deleted=10, left=0, ok=True), stopped=stopped,
                       aborted=stopped is not None)
    write_results(result, folder(plan) / Artifact.RESULTS)
    if chart:
        (folder(plan) / Artifact.CHARTS).mkdir(parents=True, exist_ok=True)
        (folder(plan) / Artifact.CHARTS / "load.png").write_bytes(PNG + bytes(64))
    return result


def parent_of(plan: RunPlan) -> dict:
    return json.loads((folder(plan) / Artifact.SLACK_THREAD).read_text())["parent"]


def wait_for(predicate, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def texts(thread: list[dict]) -> list[str]:
    return [m["text"].split(":", 2)[-1].strip()[:40] if m.get("text") else f"file {m['files'][0]['id']}"
            for m in thread]


def test_one_thread_per_run_parent_live_replies_summary_broadcast_chart(slack: SlackStandin, plan: RunPlan) -> None:
    notify.notify_start(plan, channel=CHANNEL)
    parent = parent_of(plan)

    notify.notify_stage_ended(plan, stage("ramp"))
    wait_for(lambda: len(slack.thread(parent["channel"], parent["ts"])) == 2)  # live: before anything else happens
    notify.notify_stage_ended(plan, stage("hold"))
    wait_for(lambda: len(slack.thread(parent["channel"], parent["ts"])) == 3)
    live = [m["text"] for m in slack.thread(parent["channel"], parent["ts"])[1:]]
    assert [t[:33] for t in live] == [":checkered_flag: Stage ramp ended", ":checkered_flag: Stage hold ended"]
    assert all("(judged when the run ends)" in t for t in live)  # figures now, no verdict yet
    finish(plan, stage("ramp"), stage("hold"))
    answer = notify.notify_summary(plan, dag_id="loadtest_nightly")

    thread = slack.thread(parent["channel"], parent["ts"])
    assert answer["ok"] and answer["thread_ts"] == parent["ts"]
    assert [m.get("subtype") for m in thread] == [None, None, None, "thread_broadcast", None]
    assert thread[0]["text"].startswith(":white_check_mark: Load test PASS: normal")  # the parent is now the summary
    assert thread[0]["edited"]["count"] == 1
    assert {b["type"] for b in thread[0]["blocks"]} >= {"header", "table", "actions"}
    assert {e["action_id"] for b in thread[0]["blocks"] if b["type"] == "actions" for e in b["elements"]} == {
        ACTION_RERUN, ACTION_PIN}
    assert [m["text"][:26] for m in thread[1:3]] == [":white_check_mark: Stage r", ":white_check_mark: Stage h"]
    (chart,) = slack.files()
    assert thread[4]["files"] == [{"id": chart["file_id"]}] and chart["thread_ts"] == parent["ts"]
    assert [m["channel"] for m in slack.messages()] == [CHANNEL] + [parent["channel"]] * 3  # one channel
    assert len(slack.updates()) == 3  # the live replies got their verdicts, the parent the summary
    assert [m["edited"]["count"] for m in thread[1:3]] == [1, 1]
    assert [m["text"] for m in slack.history(parent["channel"])][-1].startswith(":white_check_mark: Load test PASS")
    assert not (folder(plan) / Artifact.SLACK_FALLBACK).exists()


def test_every_message_is_posted_once_whoever_asks_and_however_often(slack: SlackStandin, plan: RunPlan) -> None:
    notify.notify_start(plan)
    notify.notify_start(plan)
    notify.notify_stage_ended(plan, stage("ramp"))
    notify.notify_stage_ended(plan, stage("ramp"))
    finish(plan, stage("ramp"), stage("hold"), stopped=Stop(reason="kill switch set", kind=StopKind.KILL_SWITCH))
    notify.notify_stages(plan)  # after the load step: hold and the abort, which nobody posted live
    notify.notify_stages(plan)
    notify.notify_summary(plan)
    notify.notify_summary(plan)  # a retried task

    parent = parent_of(plan)
    thread = slack.thread(parent["channel"], parent["ts"])
    assert len(slack.messages()) == 5 and len(slack.updates()) == 2 and len(slack.files()) == 1  # ramp's verdict
    assert [m["text"][:30] for m in thread[1:4]] == [
        ":white_check_mark: Stage ramp ", ":white_check_mark: Stage hold ", ":octagonal_sign: Load test sto"]
    assert thread[3]["subtype"] == "thread_broadcast"  # an abort is broadcast to the channel


def test_the_live_call_returns_at_once_even_while_slack_rate_limits(slack: SlackStandin, plan: RunPlan) -> None:
    notify.notify_start(plan)
    slack.rate_limit(for_s=3, retry_after=2)

    started = time.monotonic()
    notify.notify_stage_ended(plan, stage("ramp"))
    notify.notify_stage_ended(plan, stage("hold"))
    elapsed = time.monotonic() - started

    assert elapsed < 0.2  # the load's loop polls its stop probe twice a second: Slack must not hold it
    parent = parent_of(plan)
    wait_for(lambda: len(slack.thread(parent["channel"], parent["ts"])) == 3, timeout_s=20)
    assert slack.rate_limited()  # the sender met the 429s and waited them out


def test_a_rate_limit_for_a_while_loses_nothing_and_keeps_the_order(slack: SlackStandin, plan: RunPlan) -> None:
    slack.rate_limit(for_s=4, retry_after=1)  # from before the start message on

    notify.notify_start(plan)
    for name in ("ramp", "hold"):
        notify.notify_stage_ended(plan, stage(name))
    finish(plan, stage("ramp"), stage("hold"))
    notify.notify_summary(plan, dag_id="loadtest_manual")

    parent = parent_of(plan)
    thread = slack.thread(parent["channel"], parent["ts"])
    assert len(slack.rate_limited()) >= 3
    assert [m["text"][:35] for m in thread[:3]] == [
        ":white_check_mark: Load test PASS: ", ":white_check_mark: Stage ramp passe", ":white_check_mark: Stage hold passe"]
    assert len(thread) == 5 and thread[3]["subtype"] == "thread_broadcast" and thread[4].get("files")
    assert not (folder(plan) / Artifact.SLACK_FALLBACK).exists()  # slow is not down: nothing went to the file
    assert "did not reach Slack" not in json.dumps(thread[0]["blocks"])


def test_sends_are_paced_at_one_a_second(slack: SlackStandin, plan: RunPlan) -> None:
    notify.notify_start(plan)
    finish(plan, stage("ramp"), stage("hold"), chart=False)
    notify.notify_summary(plan)

    stamps = [c.at for c in slack.delivered()]
    assert len(stamps) == 5
    assert min(b - a for a, b in zip(stamps, stamps[1:])) >= notify.PACE_S * 0.9


def test_slack_down_keeps_the_messages_locally_and_the_summary_says_so(slack: SlackStandin, plan: RunPlan) -> None:
    notify.notify_start(plan)
    slack.outage(for_s=3)  # 503: Slack is down while the stages end
    notify.notify_stage_ended(plan, stage("ramp"))
    notify.notify_stage_ended(plan, stage("hold"))
    wait_for(lambda: (folder(plan) / Artifact.SLACK_FALLBACK).exists()
             and len((folder(plan) / Artifact.SLACK_FALLBACK).read_text().splitlines()) == 2)
    time.sleep(3)
    finish(plan, stage("ramp"), stage("hold"), chart=False)
    notify.notify_summary(plan)  # Slack is back

    kept = [json.loads(line) for line in (folder(plan) / Artifact.SLACK_FALLBACK).read_text().splitlines()]
    assert [(k["error"], k["text"][:30]) for k in kept] == [
        ("server_error", ":checkered_flag: Stage ramp en"), ("server_error", ":checkered_flag: Stage hold en")]
    parent = parent_of(plan)
    summary = json.dumps(slack.message(parent["channel"], parent["ts"])["blocks"])
    assert "2 message(s) of this run did not reach Slack (server_error)" in summary
    assert "slack_messages.jsonl" in summary


def test_a_start_lost_to_an_outage_is_posted_again_as_the_parent(slack: SlackStandin, plan: RunPlan) -> None:
    slack.outage(calls=3)
    notify.notify_start(plan)  # kept locally: Slack is down
    notify.notify_stage_ended(plan, stage("ramp"))  # Slack is back: the thread needs its parent first

    wait_for(lambda: len(slack.messages()) == 2)
    parent = parent_of(plan)
    thread = slack.thread(parent["channel"], parent["ts"])
    assert [m["text"][:25] for m in thread] == [":rocket: Load test starti", ":checkered_flag: Stage ra"]


def test_without_slack_everything_is_kept_and_the_summary_says_why(reports: Path, plan: RunPlan) -> None:
    notify.notify_start(plan)
    notify.notify_stage_ended(plan, stage("ramp"))
    finish(plan, stage("ramp"))
    notify.notify_summary(plan)

    wait_for(lambda: (folder(plan) / Artifact.SLACK_FALLBACK).exists())
    kept = [json.loads(line) for line in (folder(plan) / Artifact.SLACK_FALLBACK).read_text().splitlines()]
    assert {k["error"] for k in kept} == {"not_configured"}
    summary = next(k for k in kept if "Load test PASS" in k["text"])
    assert "Slack is not configured" in json.dumps(summary["blocks"])


def test_a_summary_still_rate_limited_at_its_budget_goes_to_the_file(slack: SlackStandin, plan: RunPlan,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "SUMMARY_BUDGET_S", 4.0)
    notify.notify_start(plan)
    finish(plan, stage("ramp"), chart=False)
    slack.rate_limit(for_s=60, retry_after=10)

    started = time.monotonic()
    notify.notify_summary(plan)

    assert time.monotonic() - started < 10
    kept = [json.loads(line) for line in (folder(plan) / Artifact.SLACK_FALLBACK).read_text().splitlines()]
    assert [k["error"] for k in kept] == ["ratelimited"] * 3  # the reply, the summary, the broadcast: kept, not lost


def test_an_alert_is_told_once_as_a_broadcast_reply_and_the_parent_says_it(slack: SlackStandin,
                                                                           plan: RunPlan) -> None:
    notify.notify_start(plan)
    message = failure_message(dag_id="loadtest_nightly", task_id="run_stages", run_id=RUN_ID, log_url=None,
                              exception=RuntimeError("master died"))

    first = notify.notify_alert(RUN_ID, key="task:run_stages", message=message, status=":boom: *Failed* in run_stages")
    again = notify.notify_alert(RUN_ID, key="task:run_stages", message=message, status=":boom: *Failed* in run_stages")

    parent = parent_of(plan)
    thread = slack.thread(parent["channel"], parent["ts"])
    assert (first, again) == (True, False)
    assert [m.get("subtype") for m in thread] == [None, "thread_broadcast"]
    assert thread[0]["text"].startswith(":boom: *Failed* in run_stages")
    assert notify.told(RUN_ID) == notify.Told(summary=False, alerts=("task:run_stages",), thread=True)


def test_two_senders_at_once_still_post_each_message_once_in_order(slack: SlackStandin, plan: RunPlan) -> None:
    notify.notify_start(plan)
    slack.rate_limit(for_s=2, retry_after=1)
    names = [f"s{i}" for i in range(4)]

    threads = [threading.Thread(target=notify.notify_stage_ended, args=(plan, stage(n))) for n in names]
    for t in threads:
        t.start()
    finish(plan, *[stage(n) for n in names], chart=False)
    notify.notify_stages(plan)  # a second sender, in this thread, while the background one runs
    for t in threads:
        t.join()

    parent = parent_of(plan)
    wait_for(lambda: len(slack.thread(parent["channel"], parent["ts"])) == 5)
    replies = [m["text"].split("Stage ")[1].split(" ")[0] for m in slack.thread(parent["channel"], parent["ts"])[1:]]
    assert sorted(replies) == names and len(slack.messages()) == 5


def test_without_slack_nothing_waits_for_the_pace(reports: Path, plan: RunPlan) -> None:
    """The fallback file has no rate limit: five messages kept take well under the 4 s five paced sends would."""
    started = time.monotonic()
    notify.notify_start(plan)
    finish(plan, stage("ramp"), stage("hold"), chart=False)
    notify.notify_summary(plan)
    wait_for(lambda: (folder(plan) / Artifact.SLACK_FALLBACK).exists())
    kept = (folder(plan) / Artifact.SLACK_FALLBACK).read_text().splitlines()
    assert len(kept) >= 3
    assert time.monotonic() - started < (len(kept) - 1) * notify.PACE_S
