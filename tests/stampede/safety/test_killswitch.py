"""The kill switch fails closed: a switch that cannot be read counts as on, with the reason in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from stampede.core.errors import Refusal
from stampede.safety import killswitch
from stampede.steps.preflight import RunRequest, preflight


@pytest.fixture
def switch_file(tmp_path, monkeypatch):
    path = tmp_path / "KILL_SWITCH"
    monkeypatch.setenv("STAMPEDE_KILL_SWITCH_FILE", str(path))
    monkeypatch.delenv("STAMPEDE_KILL_SWITCH", raising=False)
    return path


def test_no_file_and_no_variable_is_off(switch_file):
    assert killswitch.local_reason() is None


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(lambda p: p.write_text("incident 42\n  db on fire"), "kill switch: incident 42 db on fire", id="file"),
        pytest.param(lambda p: p.write_text(""), "kill switch: ", id="empty-file"),
        pytest.param(lambda p: p.mkdir(), "exists but cannot be read (Is a directory), so it counts as on",
                     id="a-directory"),
        pytest.param(lambda p: p.symlink_to(p.parent / "nowhere"), "exists but cannot be read", id="dangling-link"),
    ],
)
def test_anything_at_the_path_is_on(switch_file, make, expected):
    make(switch_file)
    reason = killswitch.local_reason()
    assert reason is not None and expected in reason and "\n" not in reason


def test_a_path_that_cannot_be_examined_is_on(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    monkeypatch.setenv("STAMPEDE_KILL_SWITCH_FILE", str(blocker / "KILL_SWITCH"))  # ENOTDIR: cannot even look
    assert "cannot tell whether" in killswitch.local_reason()


def test_a_broken_switch_refuses_the_run_before_any_request(switch_file):
    switch_file.mkdir()
    with pytest.raises(Refusal) as refused:
        preflight(RunRequest(scenarios=("smoke",), target="http://127.0.0.1:9/v1", run_id="broken-switch", workers=0))
    assert str(refused.value).startswith("kill switch: ") and "counts as on" in str(refused.value)


def test_a_kill_switch_check_that_raises_refuses_the_run(switch_file):
    def broken() -> str | None:
        raise OSError("state store unreachable")

    with pytest.raises(Refusal, match="kill switch: the kill switch cannot be read .*state store unreachable"):
        preflight(RunRequest(scenarios=("smoke",), target="http://127.0.0.1:9/v1", run_id="raising-switch", workers=0),
                  kill_switch=broken)


BROKEN_BACKEND = textwrap.dedent("""
    from airflow.secrets import BaseSecretsBackend

    class Broken(BaseSecretsBackend):
        '''A secrets backend that cannot be reached (a Vault that is down).'''

        def get_variable(self, key):
            raise ConnectionError("vault.internal:8200 is unreachable")

        def get_conn_value(self, conn_id):
            raise ConnectionError("vault.internal:8200 is unreachable")
""")
READ = "from stampede.surfaces.airflow_config import kill_switch_reason; print(kill_switch_reason())"


def _read_in_airflow(tmp_path, **env: str) -> str:
    (tmp_path / "broken_backend.py").write_text(BROKEN_BACKEND)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_VAR_")}
    environment.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", **env)
    completed = subprocess.run([sys.executable, "-c", READ], capture_output=True, text=True, timeout=120,
                               env=environment, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return completed.stdout.strip().splitlines()[-1]


@pytest.mark.integration
def test_an_unreachable_variable_store_counts_as_on(tmp_path, switch_file):
    """Airflow's ``Variable.get`` logs a backend's failure and answers "not set": the switch asks each store itself."""
    reason = _read_in_airflow(tmp_path, AIRFLOW__SECRETS__BACKEND="broken_backend.Broken")
    assert reason == ("kill switch: the Airflow Variable stampede_kill_switch cannot be read "
                      "(ConnectionError: vault.internal:8200 is unreachable), so it counts as on")


@pytest.mark.integration
@pytest.mark.parametrize(("value", "expected"), [("off", "None"), ("change freeze", "kill switch: change freeze")])
def test_the_variable_is_read_through_the_stores_that_answer(tmp_path, switch_file, value, expected):
    assert _read_in_airflow(tmp_path, AIRFLOW_VAR_STAMPEDE_KILL_SWITCH=value) == expected
