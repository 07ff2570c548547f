"""pipeline_overhead_s: wall time of a nightly DAG run minus the load time its scenario configures.

Runs ``airflow dags test loadtest_nightly`` with the smoke scenario against the
demo target (as ``make demo`` does), with the Makefile's ``AIRFLOW_HOME`` and a
temporary reports folder. The DAG run's wall time is Airflow's own record of it
(``dag_run.start_date`` to ``end_date``, what the UI shows as the run's
duration): under the scheduler a nightly run has no CLI process around it. The
command's start-up before the run (importing Airflow, parsing and writing the
DAGs, about 7 s here) and its interpreter teardown after it (freeing Airflow's
and Great Expectations' schemas, about 5 s) are reported beside it, with each
task's own time, so nothing is hidden.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from stampede.infra.demo_target.server import DemoTarget
from stampede.surfaces.bench.figures import Figure
from stampede.plan.scenario import load_scenario
from stampede.core.paths import PACKAGE_DIR

SCENARIO = "smoke"
DAG_ID = "loadtest_nightly"
TIMEOUT_S = 300


def pipeline_overhead(workdir: Path, *, quick: bool = False) -> Figure:
    load_s = load_scenario(SCENARIO).duration_s
    reports = workdir / "reports"
    env = dict(os.environ, STAMPEDE_REPORTS_DIR=str(reports))
    airflow_home = Path(env.setdefault("AIRFLOW_HOME", str(PACKAGE_DIR.parents[1] / "build" / "airflow")))
    env.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(PACKAGE_DIR.parents[1] / "dags"))
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    airflow = Path(sys.executable).with_name("airflow")
    with DemoTarget(workdir=workdir / "demo") as target:
        conf = {"scenarios": [SCENARIO], "environment": "local", "target": target.base_url}
        log_path = workdir / "dags-test.log"
        started = time.time()
        with open(log_path, "w") as log:
            completed = subprocess.run(
                [str(airflow), "dags", "test", DAG_ID, "-c", json.dumps(conf)],
                stdout=log, stderr=subprocess.STDOUT, env=env, timeout=TIMEOUT_S, check=False,
            )
        wall_s = time.time() - started
    results = sorted(reports.glob("*/results.json"), key=lambda p: p.stat().st_mtime)
    if not results:
        raise RuntimeError(f"the DAG run wrote no results (exit {completed.returncode}); see {log_path}")
    result = json.loads(results[-1].read_text())
    tasks = _task_times(airflow_home / "airflow.db", result["run_id"])
    run_start, run_end = _dag_run_times(airflow_home / "airflow.db", result["run_id"])
    if run_start is None or run_end is None:
        raise RuntimeError(f"Airflow recorded no start and end for DAG run {result['run_id']}; see {log_path}")
    first = min((t["start"] for t in tasks.values() if t["start"]), default=started)
    last = max((t["end"] for t in tasks.values() if t["end"]), default=started + wall_s)
    run_s = run_end - run_start
    overhead = run_s - load_s
    print(f"  DAG run {DAG_ID} ({SCENARIO}, {load_s} s of load): {run_s:.1f} s as Airflow records it, "
          f"overhead {overhead:.1f} s; verdict {result['verdict']}", flush=True)
    print(f"  around it, airflow dags test spent {run_start - started:.1f} s starting (first task at "
          f"{first - started:.1f} s) and {started + wall_s - run_end:.1f} s exiting: {wall_s:.1f} s of process wall time",
          flush=True)
    callables = callable_times(log_path.read_text(errors="replace"))
    for task_id, t in sorted(tasks.items(), key=lambda kv: kv[1]["start"] or 0):
        retried = f" (try {t['tries']}: the earlier tries' time is in the run, not here)" if t["tries"] > 1 else ""
        own = f" (its callable {callables[task_id]:.2f} s)" if task_id in callables else ""
        print(f"    {task_id:<22} {t['seconds']:6.1f} s  {t['state']}{retried}{own}", flush=True)
    ours = round(sum(callables.values()) - load_s, 1) if set(callables) >= set(tasks) else None
    if ours is not None:
        print(f"  of the overhead, the tasks' own code took {ours:.1f} s beyond the load and Airflow the other "
              f"{overhead - ours:.1f} s (its in-process execution API's start, each task's start and end)", flush=True)
    return Figure(
        name="pipeline_overhead_s", value=round(overhead, 1),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        details={
            "dag_run_s": round(run_s, 1), "load_s": load_s, "scenario": SCENARIO, "dag": DAG_ID,
            "exit_code": completed.returncode, "verdict": result["verdict"],
            "process_wall_s": round(wall_s, 1), "process_overhead_s": round(wall_s - load_s, 1),
            "startup_before_run_s": round(run_start - started, 1), "exit_after_run_s": round(started + wall_s - run_end, 1),
            "first_task_at_s": round(first - started, 1), "last_task_end_to_exit_s": round(started + wall_s - last, 1),
            "tasks": {k: {"seconds": round(v["seconds"], 2), "state": v["state"], "tries": v["tries"],
                          "callable_s": callables.get(k)} for k, v in tasks.items()},
            # None when the log did not show every task's callable start and end (never a guess)
            "stampede_code_beyond_load_s": ours,
            "airflow_s": None if ours is None else round(overhead - ours, 1),
            "how": "airflow dags test in a subprocess (one process, no scheduler) against the demo target; the DAG "
                   "run's start_date to end_date in Airflow's metadata minus the scenario's configured load time; "
                   "the process's start-up and exit are reported beside it; the demo target's start is not counted",
        },
    )


def callable_times(log: str) -> dict[str, float]:
    """Each task's own code time (every try), read from ``airflow dags test``'s log.

    A task's callable runs from the end of Airflow's pre-execute log group (the first
    ``::endgroup::`` after ``[DAG TEST] starting task_id=…``) to its ``Done. Returned
    value was`` or ``Task failed with exception`` line: the rest of the task's time is
    Airflow's (the in-process execution API, the state updates, XCom).
    """
    times: dict[str, float] = {}
    task, started = None, None
    for line in log.splitlines():
        stamp = line[:27]
        if "[DAG TEST] starting task_id=" in line:
            task, started = line.split("task_id=", 1)[1].split()[0], None
        elif task and started is None and "::endgroup::" in line:
            started = _epoch(stamp)
        elif task and started is not None and ("Done. Returned value was" in line or "Task failed with exception" in line):
            ended = _epoch(stamp)
            if ended is not None:
                times[task] = round(times.get(task, 0.0) + ended - started, 2)
            task, started = None, None
    return times


def _task_times(db: Path, run_id: str) -> dict[str, dict]:
    """Each task instance's start, end and state, read from Airflow's SQLite metadata database."""
    if not db.exists():
        return {}
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute(
            "SELECT task_id, start_date, end_date, state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ?",
            (DAG_ID, run_id),
        ).fetchall()
    times = {}
    for task_id, start, end, state, tries in rows:
        s, e = _epoch(start), _epoch(end)
        times[task_id] = {"start": s, "end": e, "state": state, "seconds": (e - s) if s and e else 0.0,
                          "tries": int(tries or 1)}
    return times


def _dag_run_times(db: Path, run_id: str) -> tuple[float | None, float | None]:
    """The DAG run's start and end (epoch seconds) as Airflow recorded them."""
    if not db.exists():
        return None, None
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT start_date, end_date FROM dag_run WHERE dag_id = ? AND run_id = ?",
                           (DAG_ID, run_id)).fetchone()
    return (_epoch(row[0]), _epoch(row[1])) if row else (None, None)


def _epoch(value: str | None) -> float | None:
    if not value:
        return None
    text = value.replace(" ", "T")
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        from datetime import timezone

        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


# -- the same under the real scheduler -------------------------------------------------
SCHEDULER_DAG = "loadtest_manual"  # on demand: unpausing it starts nothing by itself
SCHEDULER_COMPONENTS = (
    ("api-server", ["api-server"]),
    ("scheduler", ["scheduler", "--skip-serve-logs"]),
    ("dag-processor", ["dag-processor"]),
)


def scheduler_overhead(workdir: Path, *, quick: bool = False) -> Figure:
    """A ``loadtest_manual`` run (smoke) under the scheduler with LocalExecutor: Airflow's recorded duration minus the load.

    A fresh Airflow home (SQLite) in ``workdir`` with the API server, the scheduler
    (LocalExecutor: each task its own process) and the dag-processor on loopback;
    the components' start (until they are healthy and the execution API answers, as
    ``make airflow`` waits) and the database migration are not counted, only the DAG
    run from its ``start_date`` to its ``end_date``, with each task's own time and
    the gaps between tasks (the scheduler's polling and each task process's start).
    """
    from stampede.infra.airflow_processes import AirflowProcesses, ApiClient, base_env
    from stampede.core.netutil import free_port
    from stampede.surfaces.local_airflow import LOCAL_SCHEDULER, environments_with_local_target

    load_s = load_scenario(SCENARIO).duration_s
    checkout = PACKAGE_DIR.parents[1]
    home = workdir / "airflow_home"
    home.mkdir(parents=True)
    (home / "passwords.json").write_text(json.dumps({"admin": "admin"}))
    with DemoTarget(workdir=workdir / "demo") as target:
        environments = workdir / "environments.yaml"
        environments.write_text(environments_with_local_target(target.base_url))
        env = base_env(home=home, port=free_port(), dags_folder=checkout / "dags", plugins_folder=checkout / "plugins")
        env |= {
            **LOCAL_SCHEDULER,  # as `make airflow` runs it
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "STAMPEDE_ENVIRONMENTS_FILE": str(environments), "STAMPEDE_REPORTS_DIR": str(workdir / "reports"),
        }
        for name in ("STAMPEDE_KILL_SWITCH", "STAMPEDE_HISTORY_URL", "STAMPEDE_STATE_URL", "STAMPEDE_ARTIFACTS_URL"):
            env.pop(name, None)
        airflow = AirflowProcesses(workdir / "processes", env)
        try:
            started = time.time()
            airflow.airflow("db", "migrate")
            for name, args in SCHEDULER_COMPONENTS:
                airflow.spawn(name, args)
            airflow.wait_healthy(["metadatabase", "scheduler", "dag_processor"], timeout_s=240)
            api = ApiClient(airflow.base_url)
            api.wait_dags([SCHEDULER_DAG])
            ready_s = time.time() - started
            api.call("PATCH", f"/api/v2/dags/{SCHEDULER_DAG}", {"is_paused": False})
            run_id = api.trigger(SCHEDULER_DAG, {"scenario": SCENARIO, "environment": "local", "target": target.base_url})
            run = api.wait_run(SCHEDULER_DAG, run_id, timeout_s=TIMEOUT_S)
            tasks = api.task_instances(SCHEDULER_DAG, run_id)
        finally:
            left = airflow.stop()
    run_start, run_end = _epoch(run.get("start_date")), _epoch(run.get("end_date"))
    if run_start is None or run_end is None:
        raise RuntimeError(f"the scheduler's DAG run {run_id} ended {run.get('state')} without start and end; "
                           f"see {workdir / 'processes'}")
    spans = sorted(((t, _epoch(ti.get("start_date")), _epoch(ti.get("end_date")), ti.get("state"))
                    for t, ti in tasks.items()), key=lambda s: s[1] or 0)
    task_s = {t: round(e - s, 2) for t, s, e, _st in spans if s and e}
    # time with no task running: the scheduler noticing a task ended and the next one's process starting
    busy_until, idle = run_start, 0.0
    for _t, s, e, _st in spans:
        if s and e:
            idle += max(0.0, s - busy_until)
            busy_until = max(busy_until, e)
    idle += max(0.0, run_end - busy_until)
    run_s = run_end - run_start
    print(f"  scheduler (LocalExecutor) run of {SCHEDULER_DAG} ({SCENARIO}, {load_s} s of load): {run_s:.1f} s as "
          f"Airflow records it, overhead {run_s - load_s:.1f} s ({idle:.1f} s with no task running); "
          f"state {run.get('state')}; components ready after {ready_s:.0f} s (not counted)", flush=True)
    for task_id, seconds in task_s.items():
        print(f"    {task_id:<22} {seconds:6.1f} s", flush=True)
    return Figure(
        name="pipeline_overhead_scheduler_s", value=round(run_s - load_s, 1),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        details={
            "dag_run_s": round(run_s, 1), "load_s": load_s, "scenario": SCENARIO, "dag": SCHEDULER_DAG,
            "state": run.get("state"), "no_task_running_s": round(idle, 1), "tasks": task_s,
            "components_ready_s": round(ready_s, 1), "left_running": left,
            "how": "api-server, scheduler (LocalExecutor, parallelism 4, idle sleep 0.2 s as make airflow sets them) "
                   "and dag-processor on loopback with a fresh SQLite home, ready once healthy and the execution API "
                   "answers (its first request builds it; make airflow waits for the same); the DAG run's start_date "
                   "to end_date from the REST API minus the scenario's load time",
        },
    )


# -- the breaking-point search on one master -------------------------------------------------
SEARCH_STEP_S = 15
SEARCH_LOCUSTFILE = PACKAGE_DIR.parents[1] / "tests" / "stampede" / "polling_locustfile.py"  # PollingUser


def measured_search(workdir: Path, *, step_s: int = SEARCH_STEP_S) -> dict:
    """A real breaking-point search (closed model, one local process) on a loopback target that
    holds 200 req/s: its wall time from the call to its results, the steps' durations, and every
    Locust master process that ran during it (seen by polling this process's children)."""
    import threading

    import psutil
    import yaml

    from stampede.infra.fixed_latency_target import FixedLatencyTarget
    from stampede.safety import lease
    from stampede.steps.breaking_point import search_breaking_point
    from stampede.steps.preflight import RunRequest, preflight

    scenario = workdir / "search.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "bench-search", "journeys": {"PollingUser": 1}, "think_time_s": [0.02, 0.05],
        "locustfile": str(SEARCH_LOCUSTFILE),
        "stages": [{"name": "warm", "users": 4, "spawn_rate": 4, "duration_s": 5}],
        "thresholds": {"p95_ms": 500, "error_rate": 0.01},
        "search": {"start_users": 4, "max_users": 32, "step_factor": 2, "step_duration_s": step_s, "refine_steps": 2},
        "cleanup": "none",  # it only polls
    }))
    masters: set[int] = set()
    watching = threading.Event()

    def watch() -> None:
        me = psutil.Process()
        while not watching.is_set():
            for child in me.children(recursive=True):
                try:
                    command = child.cmdline()
                except psutil.Error:
                    continue
                if "locust" in command and "--stampede-out" in command:
                    masters.add(child.pid)
            watching.wait(0.1)

    run_id = f"bench-search-{int(time.time())}"
    with FixedLatencyTarget(20.0, workdir, capacity_rps=200) as target:
        plan = preflight(RunRequest(scenarios=(str(scenario),), target=target.base_url, run_id=run_id, workers=0,
                                    out_dir=str(workdir / "out")))
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            started = time.time()
            result = search_breaking_point(plan)
            wall_s = time.time() - started
        finally:
            watching.set()
            watcher.join(timeout=5)
            lease.release(run_id=run_id, target=plan.target)
    step_sum_s = float(sum(s.duration_s for s in result.steps))
    planned_sum_s = float(step_s * len(result.steps))
    return {
        "wall_s": round(wall_s, 2), "steps": len(result.steps), "step_sum_s": round(step_sum_s, 2),
        "planned_step_sum_s": planned_sum_s, "ratio": round(wall_s / planned_sum_s, 3),
        "masters": sorted(masters), "levels": [s.level for s in result.steps],
        "run_dirs": sorted({s.run_dir for s in result.steps}), "verdict": result.verdict,
        "breaking_point": result.breaking_point,
    }


def search_overhead(workdir: Path, *, quick: bool = False) -> Figure:
    """search_wall_per_step_s: a breaking-point search's wall time over the sum of its steps' planned durations."""
    measured = measured_search(workdir)
    print(f"  breaking-point search: {measured['steps']} steps of {SEARCH_STEP_S} s on "
          f"{len(measured['masters'])} Locust master(s): {measured['wall_s']:.1f} s wall for "
          f"{measured['planned_step_sum_s']:.0f} s of steps ({measured['ratio']:.3f}x); levels "
          f"{', '.join(f'{x:g}' for x in measured['levels'])}", flush=True)
    return Figure(
        name="search_wall_per_step_s", value=measured["ratio"],
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        details={**{k: v for k, v in measured.items() if k != "breaking_point"}, "masters": len(measured["masters"]),
                 "how": "search_breaking_point in-process (workers 0) on a loopback target holding 200 req/s; wall "
                        "from the call to its results (master start and end included) over steps x step_duration_s"},
    )
