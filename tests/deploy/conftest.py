"""A real Airflow deployment, started by the tests: CeleryExecutor, PostgreSQL, Redis, two workers that share no disk.

- Airflow's metadata DB and Stampede's shared state: two fresh PostgreSQL
  databases (dropped afterwards);
- the Celery broker: a Redis database of its own (flushed afterwards);
- API server, scheduler, dag-processor and two Celery workers, each a process
  tree of its own, bound to 127.0.0.1; each worker reports its own hostname
  (127.0.0.2, 127.0.0.3) and has its own scratch folder (``STAMPEDE_REPORTS_DIR``):
  no reports folder is shared;
- run artifacts in object storage: moto's S3 server, reached through the
  ``aws_default`` connection (``STAMPEDE_ARTIFACTS_URL``);
- demo targets on loopback, one per run (a target's lease is per run).

Skips, saying why, only when PostgreSQL or Redis is not there (both run on this
project's machines and CI's).
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from stampede.core.netutil import free_port
from stampede.infra.airflow_processes import AirflowProcesses, ApiClient, base_env, celery_env, shared_secrets
from stampede.infra.databases import FreshDatabase, postgres_problem

REPO = Path(__file__).resolve().parents[2]
REDIS = ("127.0.0.1", 6379)
WORKERS = ("127.0.0.2", "127.0.0.3")  # each worker's hostname: loopback literals resolve without DNS
BUCKET = "stampede-deploy-test"
HEARTBEAT_TIMEOUT_S = 10  # a killed worker's task is failed 10-12 s after its last heartbeat
# requests only the load sends (cleanup lists and deletes; health checks are GET /health)
LOAD_ONLY = re.compile(r'^demo_http_requests_total\{method="(POST|PATCH)",route="/v1/(escrows|listings)[^"]*"'
                       r'|^demo_http_requests_total\{method="GET",route="/v1/(escrows|listings)/\{')


def redis_problem() -> str | None:
    try:
        with socket.create_connection(REDIS, timeout=2):
            return None
    except OSError as exc:
        return f"Redis is not reachable on {REDIS[0]}:{REDIS[1]} ({exc.strerror or exc})"


def load_requests(target) -> int:
    """Requests the demo target answered on the routes only a load sends (from its own /metrics)."""
    with urllib.request.urlopen(target.metrics_url, timeout=5) as response:  # loopback
        text = response.read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if LOAD_ONLY.match(line)))


@dataclass
class Deployment:
    airflow: AirflowProcesses
    api: ApiClient
    root: Path
    s3: object
    targets: dict = field(default_factory=dict)

    workers: tuple[str, ...] = WORKERS
    heartbeat_timeout_s: int = HEARTBEAT_TIMEOUT_S

    def worker_of(self, hostname: str) -> str:
        return f"worker-{WORKERS.index(hostname)}"

    @staticmethod
    def load_requests(target) -> int:
        return load_requests(target)

    def load_processes(self) -> list[int]:
        """Live Locust processes this deployment started (its marker is in their environment)."""
        import psutil

        found = []
        for pid in self.airflow.marked():
            try:
                if "locust" in " ".join(psutil.Process(pid).cmdline()):
                    found.append(pid)
            except psutil.Error:
                pass
        return found

    def artifact_keys(self, run_id: str, dag_id: str = "loadtest_manual") -> set[str]:
        from stampede.plan.run_plan import run_tag_for

        prefix = f"runs/{run_tag_for(run_id, dag_id)}/"
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return {item["Key"][len(prefix):] for page in pages for item in page.get("Contents", [])}

    def artifact(self, run_id: str, name: str, dag_id: str = "loadtest_manual") -> bytes:
        from stampede.plan.run_plan import run_tag_for

        return self.s3.get_object(Bucket=BUCKET, Key=f"runs/{run_tag_for(run_id, dag_id)}/{name}")["Body"].read()


def _redis_database() -> int:
    """An empty Redis database of our own (1-15), so the broker shares no queue with anyone."""
    import redis

    for number in range(15, 0, -1):
        client = redis.Redis(*REDIS, db=number)
        if client.dbsize() == 0 and client.set("stampede-deploy-test", os.getpid(), nx=True, ex=3600):
            return number
    raise RuntimeError("no empty Redis database between 1 and 15")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    for problem in (postgres_problem(), redis_problem()):
        if problem:
            pytest.skip(f"the deployment test needs PostgreSQL and Redis: {problem}")
    import boto3
    import redis

    from stampede.infra.demo_target.server import DemoTarget
    from stampede.infra.moto_standin import MotoStandin
    from stampede.surfaces.local_airflow import environments_with_local_target

    root = tmp_path_factory.mktemp("deployment")
    redis_db = _redis_database()
    with FreshDatabase("stampede_airflow") as metadata, FreshDatabase("stampede_state") as state, \
            MotoStandin() as s3_server, DemoTarget(workdir=root / "target-form") as form_target, \
            DemoTarget(workdir=root / "target-nightly") as nightly_target, \
            DemoTarget(workdir=root / "target-kill") as kill_target:
        s3 = boto3.client("s3", endpoint_url=s3_server.endpoint_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3.create_bucket(Bucket=BUCKET)
        environments = root / "environments.yaml"
        environments.write_text(environments_with_local_target(form_target.base_url))
        home = root / "airflow_home"
        home.mkdir()
        (home / "passwords.json").write_text(json.dumps({"admin": "admin"}))  # known credentials
        port = free_port()
        sync_url = metadata.url
        env = base_env(home=home, port=port, dags_folder=REPO / "dags", plugins_folder=REPO / "plugins")
        env |= shared_secrets() | celery_env(home=home, metadata_url=sync_url, redis_url=f"redis://{REDIS[0]}:{REDIS[1]}/{redis_db}",
                                              heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S) | {
            # Stampede: shared state in PostgreSQL, artifacts in S3, the demo target as `local`
            "STAMPEDE_STATE_URL": state.url,
            "STAMPEDE_ARTIFACTS_URL": f"s3://{BUCKET}/runs",
            "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({
                "conn_type": "aws", "login": "testing", "password": "testing",
                "extra": {"endpoint_url": s3_server.endpoint_url, "region_name": "us-east-1"}}),
            "STAMPEDE_ENVIRONMENTS_FILE": str(environments),
            "STAMPEDE_TARGET_PASSWORD": os.environ["STAMPEDE_TARGET_PASSWORD"],
            "STAMPEDE_REPORTS_DIR": str(root / "no-host-writes-here"),
        }
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                     "STAMPEDE_KILL_SWITCH", "STAMPEDE_HISTORY_URL"):
            env.pop(name, None)
        airflow = AirflowProcesses(root, env)
        try:
            started = time.monotonic()
            airflow.airflow("db", "migrate")
            for name, args in (("api-server", ["api-server"]), ("scheduler", ["scheduler", "--skip-serve-logs"]),
                               ("dag-processor", ["dag-processor"])):
                airflow.spawn(name, args, env={"STAMPEDE_REPORTS_DIR": str(root / "hosts" / name / "reports")})
            for index, hostname in enumerate(WORKERS):
                host = root / "hosts" / f"worker-{index}"
                airflow.spawn(f"worker-{index}", ["celery", "worker", "-H", f"worker{index}", "--skip-serve-logs",
                                                  "--without-mingle", "--without-gossip", "-c", "2"],
                              cwd=host, env={"STAMPEDE_HOSTNAME": hostname,
                                             "STAMPEDE_REPORTS_DIR": str(host / "reports"),
                                             "STAMPEDE_KILL_SWITCH_FILE": str(host / "KILL_SWITCH")})
            airflow.wait_healthy(["metadatabase", "scheduler", "dag_processor"],
                                 ready_logs={"worker-0": " ready.", "worker-1": " ready."}, timeout_s=240)
            api = ApiClient(airflow.base_url)
            api.wait_dags(["loadtest_manual", "loadtest_nightly"])
            print(f"deployment ready in {time.monotonic() - started:.0f} s at {airflow.base_url}")
            yield Deployment(airflow=airflow, api=api, root=root, s3=s3,
                             targets={"form": form_target, "nightly": nightly_target, "kill": kill_target})
        finally:
            left = airflow.stop()
            redis.Redis(*REDIS, db=redis_db).flushdb()
            from stampede.state import db

            db.dispose_all()
        assert left == [], f"processes of the deployment still running: {left}"

