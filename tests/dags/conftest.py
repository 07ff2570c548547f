"""Airflow fixtures: a migrated SQLite metadata DB in this session's own AIRFLOW_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    home = Path(os.environ["AIRFLOW_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    airflow = Path(sys.executable).with_name("airflow")
    completed = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    return home


TEST_SCENARIOS = Path(__file__).with_name("scenarios")  # beside the stock ones, as a team's own folder would be


@pytest.fixture(scope="session", autouse=True)
def team_scenarios():
    """The DAGs' forms list these tests' scenarios by name (run confs take names, never paths)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setenv("STAMPEDE_SCENARIOS_DIR", str(TEST_SCENARIOS))
        yield TEST_SCENARIOS


@pytest.fixture(scope="session")
def dag_bag(team_scenarios):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


SLACK_TOKEN = "xoxb-e2e-secret-token"


@pytest.fixture
def slack(monkeypatch):
    """A Slack stand-in, reached through the Airflow connection slack_api_default (as in production)."""
    from stampede.infra.slack_standin import SlackStandin

    with SlackStandin(token=SLACK_TOKEN, signing_secret=SIGNING_SECRET) as standin:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_API_DEFAULT", json.dumps({
            "conn_type": "slack", "password": SLACK_TOKEN,
            "extra": {"base_url": standin.base_url, "channel": "#loadtests"},
        }))
        yield standin


@pytest.fixture
def demo_target(tmp_path):
    from stampede.infra.demo_target.server import DemoTarget

    with DemoTarget(workdir=tmp_path / "target") as target:
        yield target



@pytest.fixture(autouse=True)
def _dag_params_restored(request):
    """``dag.test(run_conf=...)`` leaves the run's conf in the shared DAG's params (Airflow 3.3): restore them,
    or one test's conf (a worker provider, a Slack channel) leaks into the next test's run."""
    if "dag_bag" not in request.fixturenames:
        yield
        return
    import copy

    bag = request.getfixturevalue("dag_bag")
    saved = {dag_id: (copy.deepcopy(dag.params), {t.task_id: copy.deepcopy(t.params) for t in dag.tasks})
             for dag_id, dag in bag.dags.items()}
    yield
    for dag_id, (params, tasks) in saved.items():
        dag = bag.dags[dag_id]
        dag.params = params
        for task in dag.tasks:
            task.params = tasks[task.task_id]
# -- a real Airflow API server on the session's metadata DB, with Stampede's plugins mounted ------------------
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"  # the Slack app's (the stand-in signs with it)
API_USER, API_PASSWORD = "stampede", "stampede-service-password"
SLACK_ACTORS = {
    "U0ALICE": {"airflow_user": "alice", "role": "op"},
    "U0BOB": {"airflow_user": "bob", "role": "viewer"},
}


@pytest.fixture(scope="session")
def airflow_api(airflow_db, tmp_path_factory):
    """``airflow api-server`` (loopback, a free port) with Stampede's Slack-actions plugin and service user."""
    import signal
    import time
    import urllib.request
    from types import SimpleNamespace

    from stampede.core.netutil import free_port

    root = tmp_path_factory.mktemp("api-server")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    passwords = root / "passwords.json"
    passwords.write_text(json.dumps({API_USER: API_PASSWORD}))
    env = {
        **os.environ,
        "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{API_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "STAMPEDE_SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "STAMPEDE_SLACK_ACTORS": json.dumps(SLACK_ACTORS),
        "AIRFLOW_CONN_STAMPEDE_AIRFLOW_API": json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port,
                                                         "schema": "http", "login": API_USER,
                                                         "password": API_PASSWORD}),
    }
    log = (root / "api-server.log").open("w")
    airflow = Path(sys.executable).with_name("airflow")
    proc = subprocess.Popen([str(airflow), "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, (root / "api-server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the API server never became healthy"
            try:
                with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield SimpleNamespace(base_url=base_url, user=API_USER, password=API_PASSWORD, log=root / "api-server.log",
                              interactions=f"{base_url}/stampede-slack/interactions")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def slack_secrets():
    """The stand-in's bot token and the Slack app's signing secret (what the API server verifies with)."""
    from types import SimpleNamespace

    return SimpleNamespace(token=SLACK_TOKEN, signing_secret=SIGNING_SECRET)
