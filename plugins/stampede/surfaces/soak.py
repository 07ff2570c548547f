"""The endurance soak: one long run on a real Airflow deployment, crashed three ways, checked against its target.

    python -m stampede.surfaces.soak [--duration-s 1200] [--users 300] [--out reports/soak.json]   (make soak)

A CeleryExecutor deployment on loopback (PostgreSQL for Airflow and Stampede's shared
state, Redis as the broker, one Celery worker) runs ``loadtest_manual`` with a scenario
of its own: ``users`` polling users on one local Locust worker against a canary target
that records every request with its time. During the load, at a quarter, a half and
three quarters of the plan:

1. the Locust master is SIGKILLed: its owner (the ``run_stages`` task) starts it again
   and the plan goes on at its clock (``stampede.load.runner``);
2. the task's own process (the one beating in ``owner.json``) is SIGKILLed: Airflow's
   retry takes the running master over within the plan's grace;
3. the Celery worker is restarted (its whole session SIGKILLed, a new one started):
   Airflow fails the task on its missed heartbeats and the retry takes over again.

Then it checks, from the target's own counts and the run's own files: the run ended
cleanly (the DAG run succeeded, the load step's stop is none, every stage judged); every
second the target counted is in the run's figures, but for each restart's gap (from
the dead master's last checkpoint, less one worker report, to the next master's load);
no load arrived while the owner's beat was older than the grace (plus the few seconds
a master takes to stop), nor after the run; each killed owner was taken over before its
last beat was older than the grace (``takeovers``: the old owner's last beat, the new
owner's first, the gap); the master's and worker's memory stayed
flat. It writes everything it measured to ``--out`` and prints it; exit 1 on a failed
check. The test suite runs a shortened soak (``tests/deploy/test_soak.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import psutil
import yaml

from stampede.core.netutil import free_port
from stampede.infra.airflow_processes import AirflowProcesses, ApiClient, base_env, celery_env, shared_secrets
from stampede.infra.canary import Canary
from stampede.infra.databases import FreshDatabase, postgres_problem
from stampede.load import owner
from stampede.plan.run_plan import run_tag_for

REPO = Path(__file__).resolve().parents[3]  # plugins/stampede/surfaces -> the checkout
REDIS = ("127.0.0.1", 6379)
WORKER_HOST = "127.0.0.2"  # the Celery worker's hostname: its restart comes back as the same host
DAG_ID = "loadtest_manual"
HEARTBEAT_TIMEOUT_S = 5  # Airflow fails a task whose worker died this long after its last heartbeat (beats: 1 s)
LOAD_PATH = "/escrows"  # what the soak's users request; health probes and scrapes are not load
REPORT_EVERY_S = 3.0  # a Locust worker reports every 3 s: what it had not reported when its master died is lost
STOP_SLACK_S = 5.0  # a master stops within this once its owner's beat is past the grace
LOCUSTFILE = '''"""The soak's user: poll GET /escrows, no checks (a canary answers it)."""
from locust import task
from locust.contrib.fasthttp import FastHttpUser


class PollingUser(FastHttpUser):
    @task
    def poll(self):
        self.client.get("/escrows", name="/escrows")
'''


@dataclass(frozen=True)
class SoakConfig:
    duration_s: int = 1200
    users: int = 300
    # the takeover's window: Airflow fails a dead worker's task after HEARTBEAT_TIMEOUT_S (seen 1 s after at
    # most), retries it at once, and the new try beats first (stampede.load.owner.beat_first)
    grace_s: float = 30.0
    checkpoint_s: float = 5.0
    ramp_s: int = 20
    think_time_s: tuple[float, float] = (0.5, 1.5)

    def scenario(self) -> dict:
        return {
            "name": "soak", "description": "The endurance soak (stampede.surfaces.soak): polling users, one worker.",
            "journeys": {"PollingUser": 1}, "think_time_s": list(self.think_time_s), "locustfile": "",
            "cleanup": "none", "owner_grace_s": self.grace_s,
            "stages": [{"name": "ramp", "users": self.users, "spawn_rate": max(1, self.users // 10),
                        "duration_s": self.ramp_s},
                       {"name": "hold", "users": self.users, "spawn_rate": max(1, self.users // 10),
                        "duration_s": self.duration_s - self.ramp_s}],
            "thresholds": {"p95_ms": 2000, "error_rate": 0.05},
        }


@dataclass
class Deployment:
    airflow: AirflowProcesses
    api: ApiClient
    root: Path
    reports: Path
    worker: str = "worker-0"

    def restart_worker(self) -> list[int]:
        """The Celery worker's whole session SIGKILLed (a host's worker crash), then a new one, as the same host."""
        victims = self.airflow.kill_session(self.worker)
        self.worker = f"worker-{len(self.airflow.components)}"
        _spawn_worker(self.airflow, self.root, self.worker)
        return victims


def redis_problem() -> str | None:
    import socket

    try:
        with socket.create_connection(REDIS, timeout=2):
            return None
    except OSError as exc:
        return f"Redis is not reachable on {REDIS[0]}:{REDIS[1]} ({exc.strerror or exc})"


def _redis_database() -> int:
    import redis

    for number in range(15, 0, -1):
        client = redis.Redis(*REDIS, db=number)
        if client.dbsize() == 0 and client.set("stampede-soak", os.getpid(), nx=True, ex=3 * 3600):
            return number
    raise RuntimeError("no empty Redis database between 1 and 15")


def _spawn_worker(airflow: AirflowProcesses, root: Path, name: str) -> None:
    airflow.spawn(name, ["celery", "worker", "-H", name, "--skip-serve-logs", "--without-mingle",
                         "--without-gossip", "-c", "2"], cwd=root / "hosts" / "worker",
                  env={"STAMPEDE_HOSTNAME": WORKER_HOST})


@contextmanager
def deployment(root: Path, config: SoakConfig, target_url: str) -> Iterator[Deployment]:
    """API server, scheduler, dag-processor and one Celery worker; PostgreSQL, Redis; one reports folder."""
    import redis

    from stampede.surfaces.local_airflow import environments_with_local_target

    root.mkdir(parents=True, exist_ok=True)
    scenarios = root / "scenarios"
    scenarios.mkdir(exist_ok=True)
    (root / "soak_locustfile.py").write_text(LOCUSTFILE)
    (scenarios / "soak.yaml").write_text(yaml.safe_dump(
        {**config.scenario(), "locustfile": str(root / "soak_locustfile.py")}, sort_keys=False))
    (root / "environments.yaml").write_text(environments_with_local_target(target_url))
    home = root / "airflow_home"
    home.mkdir(exist_ok=True)
    (home / "passwords.json").write_text(json.dumps({"admin": "admin"}))
    reports = root / "reports"
    redis_db = _redis_database()
    with FreshDatabase("stampede_soak_airflow") as metadata, FreshDatabase("stampede_soak_state") as state:
        env = base_env(home=home, port=free_port(), dags_folder=REPO / "dags", plugins_folder=REPO / "plugins")
        env |= shared_secrets() | celery_env(home=home, metadata_url=metadata.url, redis_url=f"redis://{REDIS[0]}:{REDIS[1]}/{redis_db}",
                                              heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S) | {
            "STAMPEDE_STATE_URL": state.url,
            "STAMPEDE_ENVIRONMENTS_FILE": str(root / "environments.yaml"),
            "STAMPEDE_SCENARIOS_DIR": str(scenarios),
            "STAMPEDE_REPORTS_DIR": str(reports),  # one host: the scheduler, the API server and the worker share it
            "STAMPEDE_CHECKPOINT_S": str(config.checkpoint_s),
            "STAMPEDE_KILL_SWITCH_FILE": str(root / "KILL_SWITCH"),
            "STAMPEDE_TARGET_PASSWORD": os.environ.get("STAMPEDE_TARGET_PASSWORD", "soak"),
        }
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "STAMPEDE_KILL_SWITCH", "STAMPEDE_HISTORY_URL", "STAMPEDE_ARTIFACTS_URL"):
            env.pop(name, None)
        airflow = AirflowProcesses(root, env)
        try:
            airflow.airflow("db", "migrate")
            for name, args in (("api-server", ["api-server"]), ("scheduler", ["scheduler", "--skip-serve-logs"]),
                               ("dag-processor", ["dag-processor"])):
                airflow.spawn(name, args)
            _spawn_worker(airflow, root, "worker-0")
            airflow.wait_healthy(["metadatabase", "scheduler", "dag_processor"], ready_logs={"worker-0": " ready."},
                                 timeout_s=300)
            api = ApiClient(airflow.base_url)
            api.wait_dags([DAG_ID], timeout_s=180)
            yield Deployment(airflow=airflow, api=api, root=root, reports=reports)
        finally:
            left = airflow.stop()
            redis.Redis(*REDIS, db=redis_db).flushdb()
            from stampede.state import db

            db.dispose_all()
            if left:
                print(f"soak: processes of the deployment still running after stop: {left}", file=sys.stderr)


# -- watching the run ------------------------------------------------------------------------------------
@dataclass
class Watch:
    """What the soak samples while the run goes: the owner's beat (every 0.5 s), memory (every 5 s)."""

    run_dir: Path
    beats: list[tuple[float, float | None, str]] = field(default_factory=list)  # (now, beat_at, owner)
    rss: dict[str, list[tuple[float, float]]] = field(default_factory=dict)  # "master 123" -> [(t, MiB)]

    def sample_forever(self, stop: threading.Event) -> None:
        last_rss = 0.0
        while not stop.wait(0.5):
            now = time.time()
            beat = owner.read_beat(self.run_dir / owner.OWNER_FILE)
            self.beats.append((now, None if beat is None or beat.ended else beat.beat_at,
                               beat.owner if beat else ""))
            if now - last_rss >= 5.0:
                last_rss = now
                for role, process in load_processes(self.run_dir):
                    try:
                        mib = process.memory_info().rss / 2**20
                    except psutil.Error:
                        continue
                    self.rss.setdefault(f"{role} {process.pid}", []).append((now, round(mib, 1)))


def load_processes(run_dir: Path) -> list[tuple[str, psutil.Process]]:
    """The run's Locust master (from its checkpoint) and its local Locust workers (by their master's port)."""
    found: list[tuple[str, psutil.Process]] = []
    checkpoint = owner.read_checkpoint(run_dir / owner.CHECKPOINT_FILE)
    if checkpoint is not None:  # by pid and start time: its host is the worker's name (127.0.0.2), not ours
        try:
            master = psutil.Process(checkpoint.pid)
            if abs(master.create_time() - checkpoint.create_time) < 0.05:
                found.append(("master", master))
        except psutil.Error:
            pass
    if checkpoint is not None and checkpoint.port:
        for process in psutil.process_iter(["cmdline"]):
            line = " ".join(process.info["cmdline"] or [])
            if "--worker" in line and f"--master-port {checkpoint.port}" in line and "locust" in line:
                found.append(("worker", process))
    return found


def _wait(condition, timeout_s: float, what: str, poll_s: float = 0.5):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll_s)
    raise TimeoutError(f"soak: timed out after {timeout_s:.0f} s waiting for {what}")


# -- the soak ------------------------------------------------------------------------------------------------
def soak(config: SoakConfig, root: Path) -> dict:
    """Run the soak; returns what it measured and each check's outcome (``ok``)."""
    with Canary() as target, deployment(root, config, target.base_url) as deployed:
        api = deployed.api
        api.call("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        run_id = api.trigger(DAG_ID, {"scenario": "soak", "environment": "local", "target": target.base_url,
                                      "workers": 1})
        run_dir = deployed.reports / run_tag_for(run_id, DAG_ID)
        _wait(lambda: owner.read_checkpoint(run_dir / owner.CHECKPOINT_FILE) and _load_hits(target) > config.users,
              300, "the load to flow")
        load_started = min(_load_times(target))
        watch = Watch(run_dir)
        stop = threading.Event()
        sampler = threading.Thread(target=watch.sample_forever, args=(stop,), daemon=True)
        sampler.start()
        kills: list[dict] = []
        try:
            for fraction, kill in ((0.25, _kill_master), (0.5, _kill_task_process), (0.75, _restart_worker)):
                _wait(lambda f=fraction: time.time() >= load_started + f * config.duration_s,
                      config.duration_s + 60, f"{fraction:.0%} of the plan", poll_s=0.2)
                kills.append({"what": kill.__name__.strip("_"), "at": time.time(),
                              "plan_s": round(time.time() - load_started, 1), **kill(deployed, run_dir)})
                print(f"soak: {kills[-1]['what']} at {kills[-1]['plan_s']:.0f} s of the plan", flush=True)
            run = api.wait_run(DAG_ID, run_id, timeout_s=config.duration_s + 600)
            ended_at = time.time()
            time.sleep(5.0)  # anything still arriving now is load nobody owns
        finally:
            stop.set()
            sampler.join(timeout=5)
        tasks = api.task_instances(DAG_ID, run_id)
        times = _load_times(target)
        left = [f"{role} {p.pid}" for role, p in load_processes(run_dir) if p.is_running()]
    return judge(config, run_dir, run=run, tasks=tasks, times=times, kills=kills, watch=watch,
                 ended_at=ended_at, left=left)


def _load_times(target: Canary) -> list[float]:
    with target._lock:
        return sorted(hit.t for hit in target.requests if hit.path.endswith(LOAD_PATH))


def _load_hits(target: Canary) -> int:
    with target._lock:
        return sum(1 for hit in target.requests if hit.path.endswith(LOAD_PATH))


def _kill_master(deployed: Deployment, run_dir: Path) -> dict:
    checkpoint = owner.read_checkpoint(run_dir / owner.CHECKPOINT_FILE)
    assert checkpoint is not None
    os.kill(checkpoint.pid, signal.SIGKILL)
    return {"pid": checkpoint.pid}


def _kill_task_process(deployed: Deployment, run_dir: Path) -> dict:
    beat = owner.read_beat(run_dir / owner.OWNER_FILE)
    assert beat is not None and not beat.ended, beat
    pid = int(beat.owner.rpartition(":")[2])
    os.kill(pid, signal.SIGKILL)
    return {"pid": pid, "owner": beat.owner}


def _restart_worker(deployed: Deployment, run_dir: Path) -> dict:
    beat = owner.read_beat(run_dir / owner.OWNER_FILE)
    victims = deployed.restart_worker()
    owner_pid = int(beat.owner.rpartition(":")[2]) if beat else -1
    return {"victims": len(victims), "owner_among_them": owner_pid in victims}


# -- the checks ------------------------------------------------------------------------------------------------
OWNER_KILLS = ("kill_task_process", "restart_worker")  # the kills that take the owner down: a retry takes over


def takeover_timeline(kills: list[dict], beats: list[tuple[float, float | None, str]]) -> list[dict]:
    """For each kill of the owner: its last beat, when the new owner's first beat appeared, the gap between.

    ``gap_s`` is the longest the master saw no fresh beat (the new beat's time less the old owner's last);
    it must stay within the grace, or the master stopped the load as ownerless. ``None`` when no new
    owner ever beat. ``beats`` are the watch's samples, ``(now, beat_at, owner)``, in time order.
    """
    timeline = []
    for kill in (k for k in kills if k["what"] in OWNER_KILLS):
        before = [(beat_at, who) for now, beat_at, who in beats if now <= kill["at"] and beat_at is not None]
        last_beat_at, old = before[-1] if before else (None, kill.get("owner", ""))
        new = next(((beat_at, who) for now, beat_at, who in beats
                    if now > kill["at"] and beat_at is not None and who != old), None)
        timeline.append({
            "what": kill["what"], "died_at": kill["at"], "old_owner": old, "last_beat_at": last_beat_at,
            "new_owner": new[1] if new else None, "new_beat_at": new[0] if new else None,
            "gap_s": round(new[0] - last_beat_at, 2) if new and last_beat_at is not None else None,
            "after_death_s": round(new[0] - kill["at"], 2) if new else None,
        })
    return timeline


def takeovers_within(timeline: list[dict], grace_s: float) -> bool:
    """Every owner killed was taken over, each before its last beat was older than the grace."""
    return all(t["gap_s"] is not None and t["gap_s"] <= grace_s for t in timeline)


def judge(config: SoakConfig, run_dir: Path, *, run: dict, tasks: dict, times: list[float], kills: list[dict],
          watch: Watch, ended_at: float, left: list[str]) -> dict:
    output = json.loads((run_dir / "locust_output.json").read_text())
    results = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
    restarts = output.get("restarts") or []
    series = {row["t"]: row["requests"] for row in output.get("series", [])}
    target = Counter(int(t) for t in times)
    gaps = [(int(r["figures_until"] - REPORT_EVERY_S) - 2, int(r["load_resumed_at"] or r["died_at"]) + 1)
            for r in restarts]  # seconds a restart may have lost: its last report, to the new master's load

    def in_gap(sec: int) -> bool:
        return any(a < sec <= b for a, b in gaps)

    # per-second counts, cumulated over each stretch between gaps: a request in flight crosses a second at most
    first, last = min(target), max(target)
    worst, missing, running = 0, [], 0
    for sec in range(first, last + 1):
        if in_gap(sec):
            running = 0
            continue
        running += target[sec] - series.get(sec, 0)
        worst = max(worst, abs(running))
        if target[sec] > config.users // 4 and series.get(sec, 0) == 0 and first < sec < last:
            missing.append(sec)
    counted = sum(n for s, n in target.items() if not in_gap(s))
    gap_counted = sum(n for s, n in target.items() if in_gap(s))
    gap_in_results = sum(n for s, n in series.items() if in_gap(s))
    in_results = sum(n for s, n in series.items() if not in_gap(s))

    # load while the owner's beat was older than its grace
    beat_age = []
    for now, beat_at, _ in watch.beats:
        if beat_at is not None:
            beat_age.append((now, now - beat_at))
    unowned = [t for t in times if any(abs(t - now) < 0.5 and age > config.grace_s + STOP_SLACK_S
                                       for now, age in beat_age)]
    after_end = [t for t in times if t > ended_at]

    # memory: every process that lived most of the run, its last third against its first third (after warm-up)
    memory = {}
    for name, samples in watch.rss.items():
        if len(samples) < 12:
            continue
        third = len(samples) // 3
        early = statistics.median(m for _, m in samples[1:third + 1])
        late = max(m for _, m in samples[-third:])
        memory[name] = {"samples": len(samples), "early_mib": early, "late_max_mib": late,
                        "growth_mib": round(late - early, 1), "span_s": round(samples[-1][0] - samples[0][0])}
    stages = results.get("stages", [])
    takeovers = takeover_timeline(kills, watch.beats)
    checks = {
        "dag_run_succeeded": run.get("state") == "success",
        "run_went_on": output.get("stopped") is None and not (results.get("stopped") or None),
        "master_restarted_once": len(restarts) == 1,
        "lost_at_most_a_checkpoint_and_a_report": all(
            r["lost_s"] <= config.checkpoint_s + REPORT_EVERY_S + 1.0 for r in restarts),
        "takeovers_by_retries": (tasks.get("run_stages", {}).get("try_number") or 0) >= 3,
        "takeovers_within_bound": len(takeovers) == len(OWNER_KILLS) and takeovers_within(takeovers, config.grace_s),
        "every_stage_judged": [s.get("name") for s in stages] == ["ramp", "hold"]
        and all(s.get("requests", 0) > 0 for s in stages),
        "every_counted_second_in_results": worst <= config.users + 1 and not missing,
        "no_load_unowned": not unowned and not after_end and not left,
        "memory_flat": {name.split()[0] for name in memory} == {"master", "worker"} and all(m["growth_mib"] <= max(20.0, 0.15 * m["early_mib"])
                                            for m in memory.values()),
    }
    return {
        "ok": all(checks.values()), "checks": checks, "config": asdict(config),
        "run": {"state": run.get("state"), "verdict": results.get("verdict"), "figures_note":
                results.get("figures_note") or output.get("figures_note"), "run_stages_tries":
                tasks.get("run_stages", {}).get("try_number"), "tasks": {k: v.get("state") for k, v in tasks.items()}},
        "kills": kills, "restarts": restarts, "takeovers": takeovers,
        "seconds": {"target_counted": counted, "in_results": in_results, "worst_running_difference": worst,
                    "missing_seconds": missing[:20], "gap_seconds": sum(b - a for a, b in gaps),
                    "gap_target_counted": gap_counted, "gap_in_results": gap_in_results,
                    "load_span_s": round(times[-1] - times[0], 1) if times else 0},
        "owner": {"longest_beat_age_s": round(max((a for _, a in beat_age), default=0.0), 1),
                  "grace_s": config.grace_s, "load_while_unowned": len(unowned),
                  "load_after_the_run": len(after_end), "load_processes_left": left},
        "memory": memory,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="stampede-soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration-s", type=int, default=int(os.environ.get("SOAK_DURATION_S", 1200)))
    parser.add_argument("--users", type=int, default=int(os.environ.get("SOAK_USERS", 300)))
    parser.add_argument("--grace-s", type=float, default=SoakConfig.grace_s)
    parser.add_argument("--out", default=os.path.join(os.environ.get("STAMPEDE_REPORTS_DIR", "reports"), "soak.json"))
    parser.add_argument("--root", default="", help="the deployment's scratch folder (default: a new one in /tmp)")
    args = parser.parse_args(argv)
    for problem in (postgres_problem(), redis_problem()):
        if problem:
            print(f"soak: needs PostgreSQL and Redis on loopback: {problem}", file=sys.stderr)
            return 2
    import tempfile

    root = Path(args.root or tempfile.mkdtemp(prefix="stampede-soak-"))
    config = SoakConfig(duration_s=args.duration_s, users=args.users, grace_s=args.grace_s)
    started = time.monotonic()
    report = soak(config, root)
    report["wall_s"] = round(time.monotonic() - started)
    report["root"] = str(root)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    print(f"soak: {'all checks passed' if report['ok'] else 'FAILED: ' + ', '.join(k for k, v in report['checks'].items() if not v)}"
          f"; written to {out}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
