"""Session-wide isolation: every test session gets its own AIRFLOW_HOME and reports folder.

Set before anything imports Airflow, so no test touches the developer's
Airflow or reports. Servers are started by fixtures on free loopback ports.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="stampede-tests-"))
REPO = Path(__file__).resolve().parents[1]

os.environ["AIRFLOW_HOME"] = str(_SESSION_DIR / "airflow")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["GX_ANALYTICS_ENABLED"] = "False"
os.environ["STAMPEDE_REPORTS_DIR"] = str(_SESSION_DIR / "reports")
os.environ["STAMPEDE_KILL_SWITCH_FILE"] = str(_SESSION_DIR / "KILL_SWITCH")
os.environ.setdefault("STAMPEDE_TARGET_PASSWORD", "LoadTest123!")
os.environ.setdefault("STAMPEDE_DEMO_PASSWORD", os.environ["STAMPEDE_TARGET_PASSWORD"])
for name in ("STAMPEDE_SLACK_TOKEN", "STAMPEDE_SLACK_BASE_URL", "AIRFLOW_CONN_SLACK_API_DEFAULT", "STAMPEDE_KILL_SWITCH"):
    os.environ.pop(name, None)


import pytest  # noqa: E402  (the environment above must be set before anything imports Airflow)


@pytest.fixture(scope="session")
def moto_server():
    """moto's server on a free loopback port with the workers stack from infra/aws deployed, once a session."""
    from stampede.infra.moto_standin import MotoStandin

    with MotoStandin() as server:
        server.reset()
        server.stack_env = server.deploy_workers_stack()
        yield server


@pytest.fixture
def aws(moto_server, monkeypatch):
    """The environment pointing boto3 and the providers at moto and the deployed stack."""
    monkeypatch.delenv("AIRFLOW_CONN_AWS_DEFAULT", raising=False)
    for name, value in (moto_server.env() | moto_server.stack_env).items():
        monkeypatch.setenv(name, value)
    moto_server.keep_tasks_running()
    yield moto_server
    moto_server.keep_tasks_running()


# -- no test leaves a target leased ------------------------------------------------------------------------
# A run whose teardown never ran (a SIGKILLed dag.test(), say) keeps its lease until it expires, 30 minutes on:
# a later test whose fresh target draws the same free port is then refused by its preflight, far from the cause.
# So a lease taken while a test ran and still held after its teardown fails that test, and is given back.
_SESSION_STATE = _SESSION_DIR / "reports" / "stampede.sqlite"  # the state database's default (stampede.state.db)
_CALL_STARTED = pytest.StashKey[float]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    item.stash[_CALL_STARTED] = time.time()
    return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):
    result = yield
    started = item.stash.get(_CALL_STARTED, None)
    if started is not None and _SESSION_STATE.exists():
        left = _leases_left(started)
        if left:
            raise AssertionError(f"the test left {len(left)} target lease(s) held, given back now (release what a "
                                 f"killed run leaves, as an operator would: stampede lease release RUN_ID): {left}")
    return result


def _leases_left(since: float) -> list[str]:
    import sqlite3

    import psutil

    with sqlite3.connect(_SESSION_STATE, timeout=30) as conn:
        try:
            rows = conn.execute("SELECT key, run_id, pid FROM stampede_target_leases "
                                "WHERE acquired_at >= ? AND expires_at > ?", (since, time.time())).fetchall()
        except sqlite3.OperationalError:  # no lease was ever taken in this session
            return []
        # a DAG run's lease (no pid) blocks until it expires; the command line's, while its process lives
        left = [(key, run_id) for key, run_id, pid in rows if pid is None or psutil.pid_exists(pid)]
        for _key, run_id in left:
            conn.execute("DELETE FROM stampede_target_leases WHERE run_id = ?", (run_id,))
    return [f"{run_id} on {key}" for key, run_id in left]

