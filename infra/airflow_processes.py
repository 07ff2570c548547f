"""Airflow's components as processes of their own, bound to 127.0.0.1: for ``make airflow`` and the deployment tests.

``airflow standalone`` cannot do either job: it starts its components as
``airflow …`` looked up on PATH, keeps the execution API at
``http://localhost:8080`` whatever the port, serves logs on 0.0.0.0 with no way
to pass ``--skip-serve-logs``, and never stops its scheduler on Ctrl-C. Here
every component is started from this interpreter's own ``airflow``, with one
environment that sets the port, the base URL and the execution API URL
together; the scheduler, triggerer and Celery workers run with
``--skip-serve-logs`` (the API server reads task logs from the shared log
folder), so nothing listens but the API server, on 127.0.0.1.

Each component runs in a session of its own and carries a marker in its
environment; :meth:`AirflowProcesses.stop` ends every process of those sessions
and every process with the marker (task runners call ``setpgid``, and whatever
a task starts with ``start_new_session`` leaves the session).

    with AirflowProcesses(root, env=local_env(home, port=8080)) as airflow:
        airflow.start(["api-server"], ["scheduler", "--skip-serve-logs"], ["dag-processor"])
        airflow.wait_healthy(["metadatabase", "scheduler", "dag_processor"])
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stampede.core.netutil import free_port

MARKER = "STAMPEDE_AIRFLOW_PROCESSES"  # every descendant of a component inherits it
HOSTNAME_ENV = "STAMPEDE_HOSTNAME"
AIRFLOW = Path(sys.executable).with_name("airflow")


def hostname() -> str:
    """``[core] hostname_callable`` for hosts that share one machine: ``$STAMPEDE_HOSTNAME``, else the FQDN.

    The task instance's ``hostname`` is what this returns in the worker; the API
    server also builds served-log URLs from it, so it must resolve without DNS
    (a loopback address literal such as 127.0.0.2).
    """
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


def shared_secrets() -> dict[str, str]:
    """The keys every component of one deployment must share (the scheduler signs task tokens, the API checks them)."""
    return {
        "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(os.urandom(32)).decode(),
        "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(64),  # 64 bytes: PyJWT warns below that
    }


def celery_env(*, home: Path, metadata_url: str, redis_url: str, heartbeat_timeout_s: int) -> dict[str, str]:
    """A CeleryExecutor deployment on one machine (PostgreSQL metadata, Redis broker) with short heartbeats, so a
    killed worker's task is failed and retried within seconds; known admin credentials in ``home/passwords.json``.

    The task beats and the scheduler looks for missed beats every fifth of the timeout: at Airflow's fixed
    2 s a 5 s timeout was noticed up to 4 s late (the takeover of a restarted worker's load waited for it).
    """
    beat_s = str(max(1, heartbeat_timeout_s // 5))
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url,
        "AIRFLOW__CELERY__BROKER_URL": redis_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{metadata_url}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "stampede.infra.airflow_processes.hostname",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(heartbeat_timeout_s),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": beat_s,
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": beat_s,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
    }


def base_env(*, home: Path, port: int, dags_folder: Path, plugins_folder: Path) -> dict[str, str]:
    """What every component of a loopback Airflow needs: paths, the API's address and every URL derived from it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    base_url = f"http://127.0.0.1:{port}"
    env.update({
        "PATH": f"{AIRFLOW.parent}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}",  # Airflow re-runs `airflow`
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        # nothing serves logs (--skip-serve-logs); the API server still builds served-log URLs
        # for running tasks from these ports, so keep them off the well-known 8793/8794
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__API__LOG_FETCH_TIMEOUT_SEC": "2",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "GX_ANALYTICS_ENABLED": "False",
    })
    return env


class ApiClient:
    """Airflow 3's REST API v2 with a JWT from ``POST /auth/token`` (no dependencies: urllib)."""

    def __init__(self, base_url: str, username: str = "admin", password: str = "admin") -> None:
        self.base_url = base_url.rstrip("/")
        self.username, self.password = username, password
        self.token: str | None = None

    def login(self) -> str:
        self.token = self._send("POST", "/auth/token", {"username": self.username, "password": self.password},
                                auth=False)["access_token"]
        return self.token

    def _send(self, method: str, path: str, body: Any = None, *, auth: bool = True, raw: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(request, timeout=30) as response:  # loopback only
            payload = response.read()
        if raw:
            return payload.decode()
        return json.loads(payload) if payload else None

    def call(self, method: str, path: str, body: Any = None, *, raw: bool = False) -> Any:
        if self.token is None:
            self.login()
        try:
            return self._send(method, path, body, raw=raw)
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise ApiError(exc.code, f"{method} {path} -> {exc.code}: {detail}") from None

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """A run of ``dag_id`` (no logical date); its run id."""
        return self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})[
            "dag_run_id"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        found = self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances?limit=100")
        return {t["task_id"]: t for t in found["task_instances"]}

    def wait_run(self, dag_id: str, run_id: str, *, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            run = self.run(dag_id, run_id)
            if run["state"] in ("success", "failed") or time.monotonic() > deadline:
                return run
            time.sleep(1.0)

    def wait_dags(self, dag_ids: list[str], *, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        missing = set(dag_ids)
        while missing and time.monotonic() < deadline:
            for dag_id in sorted(missing):
                try:
                    self.call("GET", f"/api/v2/dags/{dag_id}")
                    missing.discard(dag_id)
                except ApiError:
                    pass
            time.sleep(1.0)
        if missing:
            raise TimeoutError(f"DAGs not parsed after {timeout_s} s: {sorted(missing)}")


class ApiError(RuntimeError):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


def quote(text: str) -> str:
    return urllib.parse.quote(text, safe="")


@dataclass
class Component:
    name: str
    process: subprocess.Popen
    log: Path


@dataclass
class AirflowProcesses:
    """Airflow components (and anything else started with :meth:`spawn`) under ``root``, stopped together.

    :param root: logs (``root/logs/<name>.log``) and each component's working folder.
    :param env: the environment every component shares (:func:`base_env` and more).
    """

    root: Path
    env: dict[str, str]
    components: list[Component] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.root = Path(self.root).resolve()  # components run in other folders: absolute paths only
        self.root.mkdir(parents=True, exist_ok=True)
        self.marker = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.env = {**self.env, MARKER: self.marker}

    @property
    def base_url(self) -> str:
        return self.env["AIRFLOW__API__BASE_URL"]

    def airflow(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
        """``airflow ARGS`` once, to the end (``db migrate``); raises with the output's tail when it fails."""
        done = subprocess.run([str(AIRFLOW), *args], env=self.env, cwd=self.root, capture_output=True, text=True,
                              timeout=timeout_s)
        if done.returncode:
            raise RuntimeError(f"airflow {' '.join(args)} failed:\n{(done.stdout + done.stderr)[-3000:]}")
        return done

    def spawn(self, name: str, args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
              airflow: bool = True) -> Component:
        """Start ``airflow ARGS`` (or any command, ``airflow=False``) in a session of its own."""
        cwd = cwd or self.root / "run" / name
        cwd.mkdir(parents=True, exist_ok=True)
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        command = [str(AIRFLOW), *args] if airflow else args
        with open(log, "ab") as out:
            process = subprocess.Popen(command, cwd=cwd, env={**self.env, **(env or {}), MARKER: self.marker},
                                       stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True)
        component = Component(name, process, log)
        self.components.append(component)
        return component

    def component(self, name: str) -> Component:
        return next(c for c in self.components if c.name == name)

    def check_alive(self) -> None:
        for component in self.components:
            if component.process.poll() is not None:
                raise RuntimeError(f"{component.name} exited with {component.process.returncode}:\n"
                                   + component.log.read_text(errors="replace")[-3000:])

    def wait_healthy(self, parts: list[str], *, ready_logs: dict[str, str] | None = None,
                     timeout_s: float = 180) -> float:
        """Until ``/api/v2/monitor/health`` shows ``parts`` healthy, the execution API answers and each
        ``ready_logs`` line is logged; seconds taken.

        The API server builds its execution API (the one task processes call) on its first request
        to it: 3.6 s at load 4 here, which the first task of the first run would wait for inside its
        try (its ``run`` call). Asking its health here makes that part of the start.
        """
        started = time.monotonic()
        pending = dict(ready_logs or {})
        healthy = answers = False
        while time.monotonic() - started < timeout_s:
            self.check_alive()
            for name, line in list(pending.items()):
                if line.encode() in self.component(name).log.read_bytes():
                    del pending[name]
            if not healthy:
                try:
                    with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=2) as response:
                        health = json.loads(response.read())
                    healthy = all(health.get(p, {}).get("status") == "healthy" for p in parts)
                except (OSError, ValueError):
                    pass
            if healthy and not answers:
                try:  # the first answer takes seconds: it is the one being waited for
                    with urllib.request.urlopen(f"{self.base_url}/execution/health", timeout=60) as response:
                        answers = response.status == 200
                except OSError:
                    pass
            if healthy and answers and not pending:
                return time.monotonic() - started
            time.sleep(0.5)
        raise TimeoutError(f"Airflow not ready after {timeout_s} s (health of {parts}: {healthy}; execution API "
                           f"answers: {answers}; "
                           f"waiting for {sorted(pending)}); logs in {self.root / 'logs'}")

    def marked(self) -> list[int]:
        """Every live process that carries this deployment's marker (escaped grandchildren too)."""
        import psutil

        found = []
        for process in psutil.process_iter(["pid"]):
            if process.pid == os.getpid():
                continue
            try:
                if process.environ().get(MARKER) == self.marker and process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process.pid)
            except (psutil.Error, OSError):
                pass
        return found

    def kill_session(self, name: str) -> list[int]:
        """SIGKILL every process in the session of component ``name`` at once, as a host that dies; their pids."""
        import psutil

        session = self.component(name).process.pid
        victims = [p.pid for p in psutil.process_iter(["pid"]) if _session(p.pid) == session]
        for pid in victims:
            _kill(pid, signal.SIGKILL)
        self.component(name).process.wait(timeout=10)
        return victims

    def stop(self, grace_s: float = 8.0) -> list[int]:
        """SIGTERM each component's group, then SIGKILL their sessions and every marked process; pids still alive."""
        import psutil

        for component in self.components:  # in start order: workers were started last and go last
            if component.process.poll() is None:
                _killpg(component.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for component in self.components:
            try:
                component.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        sessions = {c.process.pid for c in self.components}
        victims = {p.pid for p in psutil.process_iter(["pid"]) if _session(p.pid) in sessions} | set(self.marked())
        for pid in victims:
            _kill(pid, signal.SIGKILL)
        for component in self.components:
            try:
                component.process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        time.sleep(0.3)
        return self.marked()

    def __enter__(self) -> AirflowProcesses:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
