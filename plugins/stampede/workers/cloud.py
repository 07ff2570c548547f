"""What the cloud providers (ECS Fargate, EC2) share: configuration, tags, the worker command, the life cycle.

Every cloud worker runs the same agent as a local one
(``python -m stampede.workers.agent --master-host H --master-port P --locustfiles … --expires-at …``)
inside the worker image (``infra/aws/worker.Dockerfile``), and connects to the
Locust master, which runs where the ``run_stages`` task runs: the workers must
reach ``STAMPEDE_MASTER_HOST:STAMPEDE_MASTER_PORT`` (same VPC, peering, or a
reachable address; the security group in ``infra/aws/workers.cfn.yaml`` opens
nothing inbound on the workers, they only connect out).

Every resource carries ``stampede:run_id``, ``stampede:scenario`` and
``stampede:expires_at`` (ISO 8601, UTC). A worker also ends itself at its expiry
(the agent exits; an ECS task stops with it, an EC2 instance shuts down and, by
its shutdown behaviour, terminates), and the reaper ends what is left.

``STAMPEDE_CLOUD_WORKERS_STANDIN=local`` (tests, and trying the pipeline without
an AWS account): the cloud resources are started, tagged and torn down as usual
(e.g. against moto's server), and local agent processes stand in for them as the
load generators, because moto's tasks and instances run no code.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import psutil

from stampede.core.netutil import free_port
from stampede.workers.base import WorkerSet, load_worker_set
from stampede.workers.local import LocalWorkers
from stampede.core.paths import PACKAGE_DIR

log = logging.getLogger(__name__)

TAG_RUN_ID = "stampede:run_id"
TAG_SCENARIO = "stampede:scenario"
TAG_EXPIRES_AT = "stampede:expires_at"
TAG_PROVIDER = "stampede:provider"
REPO_ROOT = PACKAGE_DIR.parents[1]  # the checkout the worker image copies to /app
IMAGE_WORKDIR = "/app"  # where worker.Dockerfile puts the repository
STANDIN_DIR = "standin"
POLL_S = 1.0


class WorkersNotReady(RuntimeError):
    """The cloud workers did not all start in time; what was started has been torn down."""


def _csv(name: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in os.environ.get(name, "").split(",") if v.strip())


@dataclass(frozen=True)
class CloudConfig:
    """Where and how cloud workers start; read from ``STAMPEDE_*`` environment variables (see the README)."""

    cluster: str = "stampede-workers"
    task_definition: str = "stampede-worker"
    container: str = "worker"
    subnets: tuple[str, ...] = ()
    security_groups: tuple[str, ...] = ()
    assign_public_ip: bool = False
    launch_template: str = ""
    ami: str = ""
    instance_profile: str = ""
    image: str = ""
    password_secret_arn: str = ""
    master_host: str = ""
    master_port: int = 5557
    master_bind_host: str = "0.0.0.0"
    ready_timeout_s: float = 300.0
    teardown_timeout_s: float = 120.0
    standin: str = ""
    extra_tags: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls) -> CloudConfig:
        env = os.environ.get
        return cls(
            cluster=env("STAMPEDE_ECS_CLUSTER") or cls.cluster,
            task_definition=env("STAMPEDE_ECS_TASK_DEFINITION") or cls.task_definition,
            container=env("STAMPEDE_ECS_CONTAINER") or cls.container,
            subnets=_csv("STAMPEDE_AWS_SUBNETS"),
            security_groups=_csv("STAMPEDE_AWS_SECURITY_GROUPS"),
            assign_public_ip=env("STAMPEDE_ECS_ASSIGN_PUBLIC_IP", "").lower() in ("1", "true", "yes"),
            launch_template=env("STAMPEDE_EC2_LAUNCH_TEMPLATE", ""),
            ami=env("STAMPEDE_EC2_AMI", ""),
            instance_profile=env("STAMPEDE_EC2_INSTANCE_PROFILE", ""),
            image=env("STAMPEDE_WORKER_IMAGE", ""),
            password_secret_arn=env("STAMPEDE_TARGET_PASSWORD_SECRET_ARN", ""),
            master_host=env("STAMPEDE_MASTER_HOST", ""),
            master_port=int(env("STAMPEDE_MASTER_PORT") or cls.master_port),
            master_bind_host=env("STAMPEDE_MASTER_BIND_HOST") or cls.master_bind_host,
            ready_timeout_s=float(env("STAMPEDE_WORKER_READY_TIMEOUT_S") or cls.ready_timeout_s),
            teardown_timeout_s=float(env("STAMPEDE_WORKER_TEARDOWN_TIMEOUT_S") or cls.teardown_timeout_s),
            standin=env("STAMPEDE_CLOUD_WORKERS_STANDIN", ""),
        )


def iso_utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_utc(value: str) -> float | None:
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc).timestamp()
    except (TypeError, ValueError):
        return None


def worker_tags(*, provider: str, run_id: str, scenario: str, expires_at: float) -> dict[str, str]:
    return {
        TAG_RUN_ID: run_id,
        TAG_SCENARIO: scenario or "unknown",
        TAG_EXPIRES_AT: iso_utc(expires_at),
        TAG_PROVIDER: provider,
        "Name": f"stampede-worker-{run_id}"[:255],
    }


def image_locustfiles(locustfiles: str) -> str:
    """The locustfiles as the worker image sees them: paths inside the repository become /app/…."""
    mapped = []
    for item in locustfiles.split(","):
        path = Path(item)
        try:
            mapped.append(f"{IMAGE_WORKDIR}/{path.resolve().relative_to(REPO_ROOT).as_posix()}")
        except ValueError:
            mapped.append(item)  # outside the repository: the image must carry it at the same path
    return ",".join(mapped)


def agent_command(*, master_host: str, master_port: int, locustfiles: str, expires_at: float) -> list[str]:
    return [
        "python", "-m", "stampede.workers.agent", "--master-host", master_host, "--master-port", str(master_port),
        "--locustfiles", image_locustfiles(locustfiles), "--expires-at", str(int(expires_at)),
    ]


class CloudWorkers:
    """The life cycle both cloud providers share; subclasses start, list and stop their resources.

    :param hook: A :class:`stampede.hooks.aws.StampedeAwsHook`; default: one for ``aws_default``.
    :param config: Where workers start; default: :meth:`CloudConfig.from_env`.
    """

    name = "cloud"

    def __init__(self, *, hook=None, config: CloudConfig | None = None) -> None:
        if hook is None:
            from stampede.hooks.aws import StampedeAwsHook

            hook = StampedeAwsHook()
        self.hook = hook
        self.config = config or CloudConfig.from_env()

    # -- to implement ---------------------------------------------------------------------------
    def _start(self, *, count: int, command: list[str], tags: dict[str, str], spot: bool, size: str,
               ttl_s: float) -> list[str]:
        raise NotImplementedError

    def _states(self, handles: list[str]) -> dict[str, str]:
        """handle → "starting" | "running" | "stopping" | "stopped"."""
        raise NotImplementedError

    def _stop(self, handles: list[str], reason: str) -> None:
        raise NotImplementedError

    def tagged(self, run_id: str | None = None) -> dict[str, dict[str, str]]:
        """Live (not stopped) resources carrying ``stampede:run_id`` (of ``run_id`` if given) → their tags."""
        raise NotImplementedError

    def lifetimes(self, workers: WorkerSet, *, stopped_at: float) -> list[float]:
        """Seconds each worker lived; default: from the recorded start to ``stopped_at``."""
        return [max(0.0, stopped_at - workers.started_at) for _ in workers.handles]

    # -- the WorkerProvider protocol ------------------------------------------------------------
    def provision(self, *, run_id: str, run_dir: Path, count: int, locustfiles: str, ttl_s: float,
                  scenario: str = "", spot: bool = False, size: str = "") -> WorkerSet:
        run_dir.mkdir(parents=True, exist_ok=True)
        existing = load_worker_set(run_dir)
        if existing is not None and existing.provider == self.name and existing.run_id == run_id:
            if len(self.alive(existing)) == existing.count == count and self._standin_ok(run_dir, count):
                log.info("Reusing %d live %s workers of run %s", count, self.name, run_id)
                return existing
            self.teardown(existing, run_dir=run_dir)
        now = time.time()
        if self.config.standin == "local":
            master_host, master_port = "127.0.0.1", free_port()
        else:
            if not self.config.master_host:
                raise ValueError(
                    "workers: STAMPEDE_MASTER_HOST is not set; fix: set it to an address of this machine that "
                    "the workers can reach (same VPC or a routable address)"
                )
            master_host, master_port = self.config.master_host, self.config.master_port
        workers = WorkerSet(
            provider=self.name, run_id=run_id, count=count, master_host=master_host, master_port=master_port,
            started_at=now, expires_at=now + ttl_s, locustfiles=locustfiles,
        )
        tags = worker_tags(provider=self.name, run_id=run_id, scenario=scenario, expires_at=workers.expires_at)
        command = agent_command(master_host=master_host, master_port=master_port, locustfiles=locustfiles,
                                expires_at=workers.expires_at)
        try:
            workers.handles = self._start(count=count, command=command, tags=tags, spot=spot, size=size, ttl_s=ttl_s)
        finally:
            workers.save(run_dir)  # even a half-started set is on record for the teardown
        log.info("Started %d %s workers for run %s: %s", len(workers.handles), self.name, run_id, workers.handles)
        try:
            self._wait_running(workers)
        except WorkersNotReady:
            left = self.teardown(workers)
            if left:
                log.error("Teardown after the failed start left %s alive", left)
            raise
        if self.config.standin == "local":
            standin = LocalWorkers().provision(
                run_id=run_id, run_dir=self._standin_dir(run_dir), count=count, locustfiles=locustfiles, ttl_s=ttl_s,
            )
            workers.master_port = standin.master_port
            workers.save(run_dir)
        return workers

    def alive(self, workers: WorkerSet) -> list[str]:
        states = self._states(workers.handles)
        return [h for h in workers.handles if states.get(h) in ("starting", "running")]

    def teardown(self, workers: WorkerSet, *, run_dir: Path | None = None) -> list[str]:
        """Stop everything tagged with the run id (and every recorded handle); return what is still alive."""
        live = set(self.tagged(workers.run_id)) | set(self.alive(workers))
        if live:
            log.info("Stopping %d %s workers of run %s: %s", len(live), self.name, workers.run_id, sorted(live))
            self._stop(sorted(live), reason=f"stampede teardown of run {workers.run_id}")
        deadline = time.monotonic() + self.config.teardown_timeout_s
        left = self._still_running(workers)
        while left and time.monotonic() < deadline:
            time.sleep(POLL_S)
            left = self._still_running(workers)
        if run_dir is not None:
            standin = load_worker_set(self._standin_dir(run_dir))
            if standin is not None:
                (self._standin_dir(run_dir) / "workers.stop").write_text("teardown")
                left += [f"local:{h}" for h in LocalWorkers().teardown(standin)]
        return left

    def processes(self, workers: WorkerSet, run_dir: Path | None = None) -> list[psutil.Process]:
        """Local processes to sample: the stand-ins' (a cloud worker's CPU is not visible from here)."""
        if run_dir is None:
            return []
        standin = load_worker_set(self._standin_dir(run_dir))
        return LocalWorkers.processes(standin) if standin else []

    # -- helpers --------------------------------------------------------------------------------
    def _still_running(self, workers: WorkerSet) -> list[str]:
        states = self._states(workers.handles)
        recorded = [h for h in workers.handles if states.get(h) in ("starting", "running")]
        return sorted(set(recorded) | set(self.tagged(workers.run_id)))

    def _wait_running(self, workers: WorkerSet) -> None:
        deadline = time.monotonic() + self.config.ready_timeout_s
        while True:
            states = self._states(workers.handles)
            dead = [h for h in workers.handles if states.get(h) in ("stopping", "stopped", None)]
            if dead:
                raise WorkersNotReady(
                    f"workers: {len(dead)} of {workers.count} {self.name} workers stopped while starting ({dead}); "
                    "they were torn down; fix: see the worker logs (CloudWatch log group stampede-workers)"
                )
            if len(workers.handles) == workers.count and all(states.get(h) == "running" for h in workers.handles):
                log.info("All %d %s workers are running", workers.count, self.name)
                return
            if time.monotonic() >= deadline:
                waiting = [h for h in workers.handles if states.get(h) != "running"]
                raise WorkersNotReady(
                    f"workers: {len(waiting)} of {workers.count} {self.name} workers were not running after "
                    f"{self.config.ready_timeout_s:.0f} s; they were torn down; fix: check capacity/quotas, or raise "
                    "STAMPEDE_WORKER_READY_TIMEOUT_S"
                )
            time.sleep(POLL_S)

    @staticmethod
    def _standin_dir(run_dir: Path) -> Path:
        path = run_dir / STANDIN_DIR
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _standin_ok(self, run_dir: Path, count: int) -> bool:
        if self.config.standin != "local":
            return True
        standin = load_worker_set(self._standin_dir(run_dir))
        return standin is not None and len(LocalWorkers().alive(standin)) == count
