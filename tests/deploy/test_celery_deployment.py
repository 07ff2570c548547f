"""The DAGs on a real deployment whose tasks land on two Celery workers that share no folder.

Triggered through the REST API v2 as a platform team's automation would; every
figure checked comes from the deployment itself (task instances, the object
store, the shared state database, the demo target's own request counters).
"""

from __future__ import annotations

import time

import pytest

from stampede.infra.airflow_processes import ApiError, quote

pytestmark = pytest.mark.integration

RUN_TIMEOUT_S = 300
# what a run leaves in the object store (every step on whichever host ran it)
ARTIFACTS = {"results.json", "report.html", "locust_output.json", "generator_samples.json", "server_metrics.json",
             "cleanup.json", "teardown.json", "cost_estimate.json", "charts/load.png"}


@pytest.fixture(scope="module")
def unpaused(deployment):
    for dag_id in ("loadtest_manual", "loadtest_nightly"):
        deployment.api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    return time.monotonic()


@pytest.fixture(scope="module")
def green_runs(deployment, unpaused):
    """Both DAGs at once (two runs share the workers' four slots), each against its own demo target.

    loadtest_manual with the trigger form's defaults (an empty conf: smoke, local, no
    target); loadtest_nightly with a run conf, as its docstring shows.
    """
    confs = {"loadtest_manual": {},
             "loadtest_nightly": {"scenarios": ["smoke"], "environment": "local",
                                  "target": deployment.targets["nightly"].base_url}}
    run_ids = {dag_id: deployment.api.trigger(dag_id, conf) for dag_id, conf in confs.items()}
    finished = {}
    for dag_id, run_id in run_ids.items():
        run = deployment.api.wait_run(dag_id, run_id, timeout_s=RUN_TIMEOUT_S)
        finished[dag_id] = (run_id, run, deployment.api.task_instances(dag_id, run_id))
    return finished


@pytest.fixture(scope="module")
def manual_run(green_runs):
    return green_runs["loadtest_manual"]


@pytest.fixture(scope="module")
def nightly_run(green_runs):
    return green_runs["loadtest_nightly"]


def _explain(deployment, dag_id, run_id, tis) -> str:
    failed = [t for t, ti in tis.items() if ti["state"] != "success"]
    lines = [f"{t}: {tis[t]['state']} on {tis[t]['hostname']}" for t in failed]
    for task_id in failed[:2]:
        try:
            log = deployment.api.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances/"
                                             f"{task_id}/logs/{max(1, tis[task_id]['try_number'])}?full_content=true")
            lines += [str(e.get("event", e)) if isinstance(e, dict) else str(e) for e in log["content"]][-15:]
        except ApiError as exc:
            lines.append(f"(no log: {exc})")
    return "\n".join(lines)


@pytest.mark.parametrize("which", ["manual", "nightly"])
def test_a_run_goes_green_with_its_tasks_on_both_workers(deployment, manual_run, nightly_run, which):
    run_id, run, tis = manual_run if which == "manual" else nightly_run
    dag_id = f"loadtest_{which}"
    assert run["state"] == "success", _explain(deployment, dag_id, run_id, tis)
    assert all(ti["state"] == "success" for ti in tis.values())
    assert {ti["hostname"] for ti in tis.values()} == set(deployment.workers), {t: ti["hostname"] for t, ti in tis.items()}


def test_the_form_defaults_loaded_the_local_environments_target(deployment, manual_run):
    run_id, _, _ = manual_run
    import json

    results = json.loads(deployment.artifact(run_id, "results.json"))
    assert results["verdict"] == "pass" and results["scenario"] == "smoke"
    assert results["target"] == deployment.targets["form"].base_url
    assert results["cleanup"]["left"] == 0 and sum(s["requests"] for s in results["stages"]) > 0


@pytest.mark.parametrize("which", ["manual", "nightly"])
def test_every_artifact_is_in_the_object_store_and_no_folder_is_shared(deployment, manual_run, nightly_run, which):
    run_id, _, tis = manual_run if which == "manual" else nightly_run
    dag_id = f"loadtest_{which}"
    assert ARTIFACTS <= deployment.artifact_keys(run_id, dag_id)
    from stampede.plan.run_plan import run_tag_for

    tag = run_tag_for(run_id, dag_id)
    hosts = deployment.root / "hosts"
    # each host holds only its own scratch copy: the report where the report task ran, none where the
    # API server (which serves it) runs; nothing was written to the deployment's common folder
    report_host = hosts / deployment.worker_of(tis["report"]["hostname"])
    assert (report_host / "reports" / tag / "report.html").exists()
    assert not list((hosts / "api-server").rglob("report.html"))
    assert not (deployment.root / "no-host-writes-here" / tag).exists()


def test_the_report_link_serves_the_report_from_the_object_store(deployment, manual_run):
    run_id, _, _ = manual_run
    api = deployment.api
    links = api.call("GET", f"/api/v2/dags/loadtest_manual/dagRuns/{quote(run_id)}/taskInstances/report/links")
    url = links["extra_links"]["Load test report"]
    assert url.startswith(deployment.airflow.base_url + "/stampede/reports/loadtest_manual/")
    page = api.call("GET", url[len(deployment.airflow.base_url):], raw=True)
    assert page == deployment.artifact(run_id, "report.html").decode()
    others = api.call("GET", f"/api/v2/dags/loadtest_manual/dagRuns/{quote(run_id)}/taskInstances/validate/links")
    assert others["extra_links"] == {}


def test_the_shared_state_database_holds_the_runs(deployment, manual_run, nightly_run):
    from sqlalchemy import select

    from stampede.state import db
    from stampede.state.history import TABLES, runs

    url = deployment.airflow.env["STAMPEDE_STATE_URL"]
    with db.engine(url, tables=TABLES).connect() as conn:
        recorded = {r.run_id: r.verdict for r in conn.execute(select(runs.c.run_id, runs.c.verdict))}
    assert recorded == {manual_run[0]: "pass", nightly_run[0]: "pass"}


def test_unpausing_the_nightly_dag_started_no_run(deployment, unpaused, manual_run, nightly_run):
    runs = deployment.api.call("GET", "/api/v2/dags/loadtest_nightly/dagRuns")["dag_runs"]
    assert time.monotonic() - unpaused > 30  # the scheduler had time to create one
    assert [r["run_type"] for r in runs] == ["manual"], runs


# -- a Celery worker dies in the middle of the load ----------------------------------------------
@pytest.fixture(scope="module")
def killed_run(deployment, unpaused):
    """loadtest_manual, 60 s of load; the worker running run_stages is SIGKILLed (its whole session) mid-load."""
    target = deployment.targets["kill"]
    api = deployment.api
    run_id = api.trigger("loadtest_manual", {"scenario": "smoke", "duration_s": 60, "environment": "local",
                                             "target": target.base_url})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        ti = api.task_instances("loadtest_manual", run_id).get("run_stages", {})
        if ti.get("state") == "running" and ti.get("hostname") and deployment.load_requests(target) >= 20:
            break
        time.sleep(1.0)
    else:
        pytest.fail(f"run_stages never ran with load flowing: {ti}")
    worker = deployment.worker_of(ti["hostname"])
    locust_before = deployment.load_processes()
    killed_at = time.monotonic()
    victims = deployment.airflow.kill_session(worker)
    survivors = [pid for pid in locust_before if pid not in victims and pid in deployment.load_processes()]
    at_kill = deployment.load_requests(target)
    samples = [(0.0, at_kill)]  # (seconds after the kill, load requests answered so far)
    run = None
    while run is None or time.monotonic() - killed_at < deployment.heartbeat_timeout_s + 40:
        time.sleep(0.5)
        samples.append((time.monotonic() - killed_at, deployment.load_requests(target)))
        if run is None:
            current = api.run("loadtest_manual", run_id)
            run = current if current["state"] in ("success", "failed") else None
        if time.monotonic() - killed_at > RUN_TIMEOUT_S:
            break
    last_load_s = max((t for (t, n), (_, before) in zip(samples[1:], samples) if n > before), default=0.0)
    print(f"worker killed mid-load: {len(victims)} processes; Locust processes that outlived the kill: "
          f"{len(survivors)}; last load request {last_load_s:.1f} s after the kill")
    return {"run_id": run_id, "run": run or api.run("loadtest_manual", run_id),
            "tis": api.task_instances("loadtest_manual", run_id), "worker": worker, "victims": victims,
            "survivors": survivors, "samples": samples, "last_load_s": last_load_s,
            "killed_host": ti["hostname"], "load_processes": deployment.load_processes()}


def test_a_killed_worker_leaves_a_truthful_failed_run_with_cleanup_done(deployment, killed_run):
    tis, other = killed_run["tis"], next(h for h in deployment.workers if h != killed_run["killed_host"])
    assert killed_run["victims"], "nothing was killed"
    assert killed_run["run"]["state"] == "failed"
    assert tis["run_stages"]["state"] == "failed"
    assert tis["validate"]["state"] == "upstream_failed" and tis["analyse"]["state"] == "upstream_failed"
    for task_id in ("cleanup_test_data", "teardown_workers"):
        assert tis[task_id]["state"] == "success", _explain(deployment, "loadtest_manual", killed_run["run_id"], tis)
        assert tis[task_id]["hostname"] == other  # the surviving worker did it
    assert tis["final_verdict"]["state"] == "failed"  # the run says it did not finish; it is not a pass
    import json

    cleanup = json.loads(deployment.artifact(killed_run["run_id"], "cleanup.json"))
    assert cleanup["left"] == 0 and cleanup["ok"], cleanup


def test_a_killed_worker_leaves_no_load_running(deployment, killed_run):
    """The target counts what arrives after the worker died: the load must end before Airflow even notices.

    Airflow declares the task dead after ``task_instance_heartbeat_timeout``; a load
    still arriving after that is load nobody owns (across real hosts, no teardown on
    another host can reach it).
    """
    assert killed_run["samples"][-1][0] >= deployment.heartbeat_timeout_s + 40  # watched long enough
    assert killed_run["last_load_s"] < deployment.heartbeat_timeout_s, (
        f"load kept arriving {killed_run['last_load_s']:.1f} s after the worker died: {killed_run['samples'][::10]}")
    assert killed_run["load_processes"] == []
