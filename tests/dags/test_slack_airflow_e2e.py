"""In Slack and in Airflow like a native provider, end to end under ``dag.test()`` with real parts.

A nightly run of three small scenarios against the demo target posts to the Slack stand-in while it answers
429 for a while: one parent, a reply per stage, one updated summary, the chart, nothing lost. Its report task
emits an Asset event per scenario; the example release gate, scheduled on them, runs on tonight's results.
The summary's buttons, pressed in the stand-in, reach Stampede's endpoint on a real Airflow API server, which
re-runs and pins through the REST API and refuses who may not. A failed run, a refused run and a task that
fails for a reason of its own each produce exactly one alert. A hung load step times out (a SIGTERM reaches its
on_kill) and the load stops; its retry takes the stopped master's figures without sending the load again.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
import psutil
import pytest

from stampede.core.paths import Artifact
from stampede.infra.demo_target.server import DemoTarget
from stampede.infra.slack_standin import SlackStandin
from stampede.render.slack import ACTION_PIN, ACTION_RERUN

pytestmark = pytest.mark.integration

def scenario_file(name: str) -> str:
    """A scenario of this module's own, by name: run confs take names, never paths (tests/dags/scenarios/)."""
    from stampede.plan.scenario import load_named_scenario

    load_named_scenario(name)  # in the scenarios folder the DAGs were parsed with
    return name


def sync_dags_and_unpause(*dag_ids: str) -> None:
    """What the dag-processor does: every DAG file in the DB; and the consumers unpaused (paused ones are not queued)."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import BundleDagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    manager = DagBundlesManager()
    manager.sync_bundles_to_db()
    for bundle in manager.get_all_dag_bundles():
        bundle.initialize()
        sync_bag_to_db(BundleDagBag(dag_folder=bundle.path, bundle_path=bundle.path, bundle_name=bundle.name),
                       bundle.name, bundle.version)
    with create_session() as session:
        for model in session.query(DagModel).filter(DagModel.dag_id.in_(dag_ids)):
            model.is_paused = False


def forget_earlier_results(dag_id: str) -> None:
    """The gate waits on tonight's nightly only: earlier tests' runs in this session's Airflow queued it too."""
    from airflow.models.asset import AssetDagRunQueue, AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(AssetDagRunQueue).filter(AssetDagRunQueue.target_dag_id == dag_id).delete()
        for event in session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id).filter(
                AssetModel.name.like("stampede.results.%")).all():
            session.delete(event)  # the ORM drops its alias and consumed-by links with it


def slack_env(monkeypatch: pytest.MonkeyPatch, standin: SlackStandin, channel: str = "#loadtests") -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_API_DEFAULT", json.dumps({
        "conn_type": "slack", "password": standin.token, "extra": {"base_url": standin.base_url, "channel": channel}}))


def run_folder(run_id: str, dag_id: str = "loadtest_nightly") -> Path:
    from stampede.plan.run_plan import run_tag_for

    return Path(os.environ["STAMPEDE_REPORTS_DIR"]) / run_tag_for(run_id, dag_id)


def parent(run_id: str) -> dict:
    return json.loads((run_folder(run_id) / Artifact.SLACK_THREAD).read_text())["parent"]


def alerts(standin: SlackStandin) -> list[str]:
    """The failure alerts the channel received (the summary is not one: it is the run's own news)."""
    return [m["text"] for m in standin.messages() if m["text"].startswith((":boom:", ":no_entry:", ":hourglass:"))]


# -- the nightly run: three scenarios, Slack rate limiting for a while --------------------------------------

@pytest.fixture(scope="module")
def nightly(airflow_db, dag_bag, tmp_path_factory, slack_secrets):
    root = tmp_path_factory.mktemp("nightly-slack")
    with pytest.MonkeyPatch.context() as monkeypatch, \
            SlackStandin(token=slack_secrets.token, signing_secret=slack_secrets.signing_secret) as standin, \
            DemoTarget(workdir=root / "target") as target:
        slack_env(monkeypatch, standin)
        sync_dags_and_unpause("example_release_gate")
        forget_earlier_results("example_release_gate")
        scenarios = [scenario_file(name) for name in ("alpha", "beta", "gamma")]

        reports = Path(os.environ["STAMPEDE_REPORTS_DIR"])
        before = set(reports.glob("LT-*"))

        def rate_limit_once_the_stages_are_known() -> None:
            """From when validate has the stages' figures (their replies are about to go) on, for 6 s."""
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                if any((d / Artifact.RESULTS).exists() for d in set(reports.glob("LT-*")) - before):
                    standin.rate_limit(for_s=6, retry_after=1)  # "for a while": 429 with Retry-After
                    return
                time.sleep(0.05)

        limiter = threading.Thread(target=rate_limit_once_the_stages_are_known, daemon=True)
        limiter.start()
        dag = dag_bag.dags["loadtest_nightly"]
        run = dag.test(run_conf={"scenarios": scenarios, "environment": "local", "target": target.base_url,
                                 "workers": 0})
        limiter.join(timeout=5)
        results = json.loads((run_folder(run.run_id) / Artifact.RESULTS).read_text())
        yield SimpleNamespace(run=run, dag=dag, slack=standin, results=results, target=target)


def test_the_nightly_run_passed(nightly) -> None:
    states = {ti.task_id: ti.state for ti in nightly.run.get_task_instances()}
    assert states == {task.task_id: "success" for task in nightly.dag.tasks}, states
    assert nightly.results["verdict"] == "pass"
    assert [s["name"] for s in nightly.results["stages"]] == ["alpha/alpha-load", "beta/beta-load", "gamma/gamma-load"]


def test_one_parent_one_reply_per_stage_one_updated_summary_the_chart(nightly) -> None:
    slack, run_id = nightly.slack, nightly.run.run_id
    top = parent(run_id)
    thread = slack.thread(top["channel"], top["ts"])
    channel_view = slack.history(top["channel"])

    assert [m.get("subtype") for m in channel_view] == [None, "thread_broadcast"]  # the parent and the summary's news
    assert thread[0]["ts"] == top["ts"] and thread[0]["edited"]["count"] == 1  # the parent, updated once
    assert thread[0]["text"].startswith(":white_check_mark: Load test PASS: alpha+beta+gamma")
    table = next(b for b in thread[0]["blocks"] if b["type"] == "table")
    assert [row[0]["text"] for row in table["rows"][1:]] == ["alpha/alpha-load", "beta/beta-load", "gamma/gamma-load"]
    replies = [m["text"] for m in thread[1:4]]
    assert [r.split("Stage ")[1].split(" ")[0] for r in replies] == ["alpha/alpha-load", "beta/beta-load",
                                                                     "gamma/gamma-load"]
    assert all(" passed: " in r for r in replies), replies  # judged, every one
    # live: the first two stages' replies were posted while the load ran (each 12 s stage is complete 9 s
    # after it ends, while the next one runs), then replaced by their verdicts; the last ends with the run
    load = next(ti for ti in nightly.run.get_task_instances() if ti.task_id == "run_stages")
    posted = [float(m["ts"]) for m in thread[1:4]]
    assert posted[0] < posted[1] < load.end_date.timestamp() < posted[2], (posted, load.end_date)
    assert [m.get("edited", {}).get("count", 0) for m in thread[1:4]] == [1, 1, 0]
    assert thread[4]["subtype"] == "thread_broadcast" and "Load test PASS" in thread[4]["text"]
    (chart,) = [f for f in slack.files() if f["filename"] == "load.png"]
    assert thread[5]["files"] == [{"id": chart["file_id"]}] and slack.file_bytes(chart["file_id"])[:4] == b"\x89PNG"
    assert len(thread) == 6 and len(slack.updates()) == 3  # the parent's summary and the two live replies
    assert alerts(slack) == []


def test_no_message_was_lost_while_slack_answered_429(nightly) -> None:
    assert len(nightly.slack.rate_limited()) >= 3  # six seconds of 429s, one attempt a second
    assert not (run_folder(nightly.run.run_id) / Artifact.SLACK_FALLBACK).exists()
    top = parent(nightly.run.run_id)
    assert "did not reach Slack" not in json.dumps(nightly.slack.message(top["channel"], top["ts"])["blocks"])


def test_every_task_ran_with_an_execution_timeout_from_its_plan(nightly) -> None:
    from stampede.plan.run_plan import RunPlan
    from stampede.surfaces.timeouts import CEILINGS, planned_timeout

    plan = RunPlan.from_dict(next(ti for ti in nightly.run.get_task_instances() if ti.task_id == "preflight")
                             .xcom_pull(task_ids="preflight"))
    for task in nightly.dag.tasks:
        assert task.execution_timeout == CEILINGS[task.task_id]  # the parse-time ceiling...
        assert planned_timeout(task.task_id, plan) <= CEILINGS[task.task_id]  # ...which the plan tightens
    assert planned_timeout("run_stages", plan) == timedelta(seconds=round((36 + 90) * 1.1 + 600))  # 3 stages of 12 s


# -- Assets: a release gate runs on tonight's results ----------------------------------------------------------

def test_the_report_task_emits_an_asset_event_per_scenario(nightly) -> None:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    with create_session() as session:
        events = session.query(AssetEvent).filter(AssetEvent.source_run_id == nightly.run.run_id).all()
        seen = {e.asset.name: (e.extra, [a.name for a in e.source_aliases], e.source_task_id) for e in events}

    assert set(seen) == {f"stampede.results.local.{name}" for name in ("alpha", "beta", "gamma")}
    extra, aliases, task = seen["stampede.results.local.beta"]
    assert (aliases, task) == (["stampede.results"], "report")
    assert extra["verdict"] == "pass" and extra["passed"] is True and extra["scenario"] == "beta"
    assert extra["environment"] == "local" and extra["dag_id"] == "loadtest_nightly"
    assert extra["p95_ms"] == nightly.results["stages"][1]["p95_ms"] and extra["cleanup_left"] == 0
    assert extra["report_url"].endswith("/report.html") and [s["name"] for s in extra["stages"]] == ["beta/beta-load"]


def test_a_release_gate_scheduled_on_the_asset_runs_after_the_nightly(nightly, dag_bag) -> None:
    """What the scheduler does with the asset queue, then the gate's tasks, in this process (no scheduler here)."""
    from airflow.jobs.job import Job
    from airflow.jobs.scheduler_job_runner import SchedulerJobRunner
    from airflow.models.dag import DagModel
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.sdk.definitions.dag import _run_task
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, TaskInstanceState

    with create_session() as session:
        queued, triggered = DagModel.dags_needing_dagruns(session)
        models = [m for m in queued.all() if m.dag_id in triggered]
        assert "example_release_gate" in [m.dag_id for m in models]
        SchedulerJobRunner(job=Job())._create_dag_runs_asset_triggered(dag_models=models, session=session)
    gate = dag_bag.dags["example_release_gate"]
    with create_session() as session:
        run = session.query(DagRun).filter(DagRun.dag_id == "example_release_gate").one()
        consumed = sorted(e.asset.name for e in run.consumed_asset_events)
        run.state = DagRunState.RUNNING
        session.commit()
        serialized = DBDagBag().get_latest_version_of_dag("example_release_gate", session=session)
        while run.state == DagRunState.RUNNING:
            session.expire_all()
            run.dag = serialized
            schedulable, _ = run.update_state(session=session)
            for ti in schedulable:
                ti.try_number += 1
                ti.state = TaskInstanceState.SCHEDULED
            session.commit()
            for ti in run.get_task_instances(session=session):
                if ti.state == TaskInstanceState.SCHEDULED:
                    _run_task(ti=ti, task=gate.task_dict[ti.task_id])
            session.expire_all()
            run = session.get(DagRun, run.id)
        verdict = run.get_task_instance("gate", session=session).xcom_pull(task_ids="gate")

    assert consumed == [f"stampede.results.local.{n}" for n in ("alpha", "beta", "gamma")]
    assert run.state == DagRunState.SUCCESS
    assert verdict == {"gated": consumed, "passed": True}


# -- the summary's buttons, through a real Airflow API server -------------------------------------------------

def summary_of(nightly) -> tuple[str, str]:
    top = parent(nightly.run.run_id)
    return top["channel"], top["ts"]


def wait_for_answers(slack: SlackStandin, count: int, timeout_s: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while len(slack.responses()) < count:
        assert time.monotonic() < deadline, slack.responses()
        time.sleep(0.1)
    return slack.responses()


def api_token(airflow_api) -> str:
    return httpx.post(f"{airflow_api.base_url}/auth/token",
                      json={"username": airflow_api.user, "password": airflow_api.password}).json()["access_token"]


def test_pressing_re_run_triggers_the_same_dag_with_the_same_settings(nightly, airflow_api) -> None:
    channel, ts = summary_of(nightly)
    before = len(nightly.slack.responses())

    click = nightly.slack.click(airflow_api.interactions, channel=channel, ts=ts, action_id=ACTION_RERUN,
                                user_id="U0ALICE", username="alice")
    answer = wait_for_answers(nightly.slack, before + 1)[-1]

    assert click.status == 200
    runs = httpx.get(f"{airflow_api.base_url}/api/v2/dags/loadtest_nightly/dagRuns",
                     headers={"Authorization": f"Bearer {api_token(airflow_api)}"}).json()["dag_runs"]
    (rerun,) = [r for r in runs if r["dag_run_id"].startswith("slack_rerun__")]
    assert rerun["conf"] == nightly.run.conf and rerun["dag_run_id"].endswith(nightly.run.run_id)
    assert rerun["note"] == f"Re-run of {nightly.run.run_id}, asked in Slack by alice (U0ALICE)"
    assert answer["response_type"] == "ephemeral" and answer["replace_original"] is False
    assert answer["text"].startswith(":repeat: Re-running `loadtest_nightly`") and rerun["dag_run_id"] in answer["text"]


def test_pressing_pin_makes_the_run_its_scenarios_baseline(nightly, airflow_api) -> None:
    from stampede.state.history import RunStore

    channel, ts = summary_of(nightly)
    before = len(nightly.slack.responses())

    nightly.slack.click(airflow_api.interactions, channel=channel, ts=ts, action_id=ACTION_PIN, user_id="U0ALICE")
    answer = wait_for_answers(nightly.slack, before + 1)[-1]

    store = RunStore()
    try:
        from stampede.core.records import RunResult

        later = RunResult.from_dict({**nightly.results, "run_id": "a-later-run", "started_at": "2999-01-01T00:00:00Z"})
        baseline, why = store.baseline_for(later)
    finally:
        store.close()
    assert baseline["run_id"] == nightly.run.run_id and why.startswith("pinned by alice (Slack U0ALICE)")
    assert answer["text"].startswith(f":pushpin: Run `{nightly.run.run_id}` is now the baseline of `alpha+beta+gamma`")


@pytest.mark.parametrize(("user", "why"), [
    pytest.param("U0BOB", "Stampede knows you as Airflow user `bob` with role `viewer`", id="viewer"),
    pytest.param("U0MALLORY", "your Slack user is not in Stampede's allow-list", id="unknown"),
])
def test_a_click_from_someone_who_may_not_is_refused_clearly(nightly, airflow_api, user, why) -> None:
    channel, ts = summary_of(nightly)
    before = len(nightly.slack.responses())
    runs_before = _run_ids(airflow_api)

    nightly.slack.click(airflow_api.interactions, channel=channel, ts=ts, action_id=ACTION_RERUN, user_id=user)
    answer = wait_for_answers(nightly.slack, before + 1)[-1]

    assert answer["text"].startswith(f":no_entry: <@{user}>, you may not re-run load tests") and why in answer["text"]
    assert answer["response_type"] == "ephemeral"
    assert _run_ids(airflow_api) == runs_before  # nothing was triggered


def test_a_forged_or_replayed_click_is_refused_by_the_endpoint(nightly, airflow_api) -> None:
    channel, ts = summary_of(nightly)
    before = len(nightly.slack.responses())

    forged = nightly.slack.click(airflow_api.interactions, channel=channel, ts=ts, action_id=ACTION_RERUN,
                                 user_id="U0ALICE", secret="someone-elses-secret")
    replayed = nightly.slack.click(airflow_api.interactions, channel=channel, ts=ts, action_id=ACTION_RERUN,
                                   user_id="U0ALICE", timestamp=int(time.time()) - 600)

    assert (forged.status, replayed.status) == (401, 401)
    time.sleep(1)
    assert len(nightly.slack.responses()) == before


def _run_ids(airflow_api) -> set[str]:
    runs = httpx.get(f"{airflow_api.base_url}/api/v2/dags/loadtest_nightly/dagRuns",
                     headers={"Authorization": f"Bearer {api_token(airflow_api)}"}).json()["dag_runs"]
    return {r["dag_run_id"] for r in runs}


# -- exactly one alert per failure ----------------------------------------------------------------------------

@pytest.fixture
def slack_only(monkeypatch, slack_secrets):
    with SlackStandin(token=slack_secrets.token, signing_secret=slack_secrets.signing_secret) as standin:
        slack_env(monkeypatch, standin)
        yield standin


def test_a_failed_run_produces_exactly_one_message_that_says_why(airflow_db, dag_bag, slack_only, demo_target,
                                                                tmp_path) -> None:
    impossible = scenario_file("strict")  # p95 under 0.01 ms: no request is that fast, the verdict is fail

    run = dag_bag.dags["loadtest_nightly"].test(run_conf={"scenarios": [impossible], "environment": "local",
                                                          "target": demo_target.base_url, "workers": 0})

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert run.state == "failed" and states["final_verdict"] == "failed" and states["notify_summary"] == "success"
    shown = slack_only.history(parent(run.run_id)["channel"])
    assert [m.get("subtype") for m in shown] == [None, "thread_broadcast"]  # the parent and one broadcast
    assert shown[1]["text"].startswith(":x: Load test FAIL: strict") and "p95" in shown[1]["text"]
    assert alerts(slack_only) == []  # no "task final_verdict failed" on top of the summary


def test_a_refused_run_produces_exactly_one_message(airflow_db, slack_only, monkeypatch) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from stampede.infra.canary import Canary

    # a DAG of its own: under dag.test() a run's conf stays in the DAG's params, and the channel would leak
    dag = DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).dags["loadtest_nightly"]
    monkeypatch.setenv("AIRFLOW_VAR_STAMPEDE_KILL_SWITCH", "change freeze until Monday")
    with Canary() as canary:
        run = dag.test(run_conf={
            "scenarios": ["smoke"], "environment": "local", "target": canary.base_url, "workers": 0,
            "slack_channel": "#release"})
        assert canary.hits() == 0

    assert run.state == "failed"
    (message,) = slack_only.messages()
    assert message["channel"] == "#release"  # the run's channel parameter
    assert message["text"].startswith(":no_entry: Load test refused (loadtest_nightly")
    assert "change freeze until Monday" in message["text"]


def test_a_task_failing_for_its_own_reason_alerts_once(airflow_db, dag_bag, slack_only, demo_target,
                                                      monkeypatch) -> None:
    def broken(plan, **kwargs):
        raise RuntimeError("the Locust master could not start: port in use")

    monkeypatch.setattr("stampede.steps.run_stages.run_stages", broken)

    run = dag_bag.dags["loadtest_nightly"].test(run_conf={"scenarios": ["smoke"], "environment": "local",
                                                          "target": demo_target.base_url, "workers": 0})

    states = {ti.task_id: ti.state for ti in run.get_task_instances()}
    assert states["run_stages"] == "failed" and states["final_verdict"] == "failed"
    (alert,) = alerts(slack_only)
    assert alert.startswith(":boom: Task loadtest_nightly.run_stages failed") and "port in use" in alert
    top = parent(run.run_id)
    assert slack_only.message(top["channel"], top["ts"])["text"].startswith(":boom: *Failed* in `run_stages`")


# -- timeouts: a hung load step times out and its load stops ---------------------------------------------------

def locust_masters_in(run_dir: Path) -> list[psutil.Process]:
    """The Locust processes of one run folder (their command line names it)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        command = " ".join(proc.info["cmdline"] or [])
        if "locust" in command and str(run_dir) in command:
            found.append(proc)
    return found


def running_masters() -> list[psutil.Process]:
    return [p for d in Path(os.environ["STAMPEDE_REPORTS_DIR"]).glob("LT-*") for p in locust_masters_in(d)]


def nightly_with(dag_bag, scenario: str, target: str, beside) -> tuple[object, float]:
    """The nightly DAG on one scenario, with ``beside`` running in a thread meanwhile: (the run, its seconds)."""
    helper = threading.Thread(target=beside, daemon=True)
    helper.start()
    started = time.monotonic()
    run = dag_bag.dags["loadtest_nightly"].test(run_conf={"scenarios": [scenario], "environment": "local",
                                                          "target": target, "workers": 0})
    helper.join(timeout=5)
    return run, time.monotonic() - started


def still_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                alive.append(pid)
        except psutil.NoSuchProcess:
            pass
    return alive


def test_a_hung_load_step_times_out_and_its_load_stops(airflow_db, dag_bag, slack_only, demo_target, tmp_path,
                                                       monkeypatch) -> None:
    """The plan says a minute; the load step overruns it (held here): execution_timeout fires, on_kill runs."""
    from stampede.surfaces import timeouts

    real = timeouts.planned_timeout
    monkeypatch.setattr(timeouts, "planned_timeout",
                        lambda task_id, plan: timedelta(seconds=8) if task_id == "run_stages" else real(task_id, plan))
    long_one = scenario_file("overrun")  # 60 s of load
    seen: list[int] = []

    def watch() -> None:  # the master while the load runs
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not seen:
            seen.extend(p.pid for p in running_masters())
            time.sleep(0.2)

    run, seconds = nightly_with(dag_bag, long_one, demo_target.base_url, watch)

    ti = next(t for t in run.get_task_instances() if t.task_id == "run_stages")
    assert run.state == "failed" and seconds < 60  # not the 60 s the load would have taken
    assert seen, "the Locust master was never seen running"
    assert still_alive(seen) == [] and locust_masters_in(run_folder(run.run_id)) == []
    # the retry (run_stages has retries, for a takeover) found the load stopped on purpose and did not send
    # it again: it took the stopped master's figures, and the run ends invalid, told once by its summary
    assert ti.try_number == 2, ti.try_number
    results = json.loads((run_folder(run.run_id) / Artifact.RESULTS).read_text())
    assert results["verdict"] == "invalid" and results["stopped"]["kind"] == "stopped", results["stopped"]
    assert alerts(slack_only) == []  # a try that is retried is no failure of its own
    assert any("INVALID" in m["text"] for m in slack_only.updates()), "the summary says the run is invalid"


def test_a_sigterm_reaches_on_kill_and_stops_the_load(airflow_db, dag_bag, slack_only, demo_target, tmp_path) -> None:
    """"Mark failed", a dagrun timeout or a stopping worker end in SIGTERM: on_kill must stop the load, not return."""
    long_one = scenario_file("stopped")  # 60 s of load
    sent: list[int] = []

    def terminate_once_the_load_runs() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            handler = signal.getsignal(signal.SIGTERM)
            masters = running_masters()
            if masters and getattr(handler, "__qualname__", "").endswith("_on_term"):  # the task runner's handler
                time.sleep(2)
                sent.extend(p.pid for p in masters)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.2)

    run, seconds = nightly_with(dag_bag, long_one, demo_target.base_url, terminate_once_the_load_runs)

    assert sent, "the load never ran"
    assert run.state == "failed" and seconds < 60
    assert still_alive(sent) == []
    # stopped on purpose: the retry takes the stopped master's figures and never sends the load again
    results = json.loads((run_folder(run.run_id) / Artifact.RESULTS).read_text())
    assert results["verdict"] == "invalid" and results["stopped"]["kind"] == "stopped", results["stopped"]
    assert "Airflow stopped the task" in results["stopped"]["reason"]
    assert alerts(slack_only) == []  # told once, by the summary
    assert any("INVALID" in m["text"] for m in slack_only.updates())
