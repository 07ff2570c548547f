"""A team's locustfile that cannot run, or a cleanup that could not authenticate, is refused before any load.

Each case: one line naming the file (or field), the cause and the fix, and a
canary target that counts zero requests. The locustfile is checked in a
process of its own (Locust is never imported by the pipeline's process).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stampede.infra.canary import Canary
from stampede.steps.preflight import RunRefused, RunRequest, preflight

MISSING_PACKAGE = """\
# reads a pre-partitioned CSV per worker, as Locust's examples/worker_index.py does
from locust import User, events, task
from locust_plugins import csvreader  # install locust-plugins first


class DemoUser(User):
    @task
    def t(self):
        pass
"""
SYNTAX_ERROR = """\
from locust import HttpUser, task


class ShowingUser(HttpUser)
    @task
    def book(self):
        pass
"""
RAISES_ON_IMPORT = """\
import os
from locust import HttpUser

API_KEY = os.environ["SHOWINGS_API_KEY"]  # a secret the load processes are never given
"""
GOOD = """\
from locust import HttpUser, task


class ShowingUser(HttpUser):
    @task
    def book(self):
        self.client.get("/showings")
"""


def scenario(tmp_path: Path, locustfile: str, *, journeys=None, **extra) -> Path:
    (tmp_path / "team.py").write_text(locustfile)
    path = tmp_path / "team.yaml"
    path.write_text(yaml.safe_dump({
        "name": "team", "locustfile": "team.py", "journeys": journeys or {"ShowingUser": 1},
        "stages": [{"name": "s", "users": 1, "spawn_rate": 1, "duration_s": 3}], **extra,
    }))
    return path


def refused(path: Path, canary: Canary) -> str:
    with pytest.raises(RunRefused) as refusal:
        preflight(RunRequest(scenarios=(str(path),), target=canary.base_url, run_id="lfcheck", workers=0))
    line = str(refusal.value)
    assert "\n" not in line and "; fix: " in line
    assert canary.hits() == 0  # nothing was sent, not even the health check
    return line


@pytest.mark.parametrize(("source", "journeys", "expected"), [
    pytest.param(MISSING_PACKAGE, {"DemoUser": 1},
                 "locustfile team.py: cannot import it: ModuleNotFoundError: No module named 'locust_plugins' "
                 "(line 3); fix: install the package that provides locust_plugins into Stampede's environment "
                 "(for example build/venv/bin/python -m pip install locust-plugins), or remove the import",
                 id="missing-package"),
    pytest.param(SYNTAX_ERROR, None, "locustfile team.py: line 4: SyntaxError: expected ':'; fix: correct the file",
                 id="syntax-error"),
    pytest.param(GOOD, {"ShowingUsr": 1}, "locustfile team.py: journeys.ShowingUsr: no User class of that name in the "
                 "file (it has: ShowingUser); fix: name one of its User classes in journeys", id="missing-class"),
    pytest.param(RAISES_ON_IMPORT, None, "locustfile team.py: importing it raised KeyError: 'SHOWINGS_API_KEY' (line 4)",
                 id="raises-on-import"),
])
def test_a_locustfile_that_cannot_run_is_refused_in_one_line_before_any_load(tmp_path, monkeypatch, source,
                                                                              journeys, expected):
    monkeypatch.setenv("SHOWINGS_API_KEY", "secret-the-check-must-not-see")  # the pipeline's, not the load's
    with Canary() as canary:
        line = refused(scenario(tmp_path, source, journeys=journeys), canary)
    assert line.startswith(expected), line


def test_a_locustfile_that_can_run_passes_the_check(tmp_path):
    with Canary() as canary:
        plan = preflight(RunRequest(scenarios=(str(scenario(tmp_path, GOOD)),), target=canary.base_url,
                                    run_id="lfcheck-ok", workers=0, out_dir=str(tmp_path / "out")))
        assert plan.locustfile == str(tmp_path / "team.py")
        assert canary.hits(exclude_health=True) == 0 and canary.hits() >= 1  # the health check only
    from stampede.steps.teardown import release_target

    release_target(plan)


def test_the_command_line_exits_2_with_the_one_line_and_sends_nothing(tmp_path):
    with Canary() as canary:
        done = subprocess.run(
            [sys.executable, "-m", "stampede.surfaces.cli", "run", "--target", canary.base_url, "--scenario",
             str(scenario(tmp_path, MISSING_PACKAGE, journeys={"DemoUser": 1})), "--workers", "0"],
            capture_output=True, text=True, timeout=120,
        )
        assert canary.hits() == 0
    assert done.returncode == 2
    refusals = [line for line in done.stderr.splitlines() if line.startswith("stampede: refused:")]
    assert refusals == [refusals[0]] and "No module named 'locust_plugins'" in refusals[0]


def test_a_cleanup_that_could_not_authenticate_is_refused_before_any_load(tmp_path, monkeypatch):
    monkeypatch.delenv("SHOWINGS_TOKEN", raising=False)
    cleanup = {"auth": {"bearer": {"env": "SHOWINGS_TOKEN"}}, "kinds": {"showing": {"delete": "DELETE /showings/{id}"}}}
    with Canary() as canary:
        line = refused(scenario(tmp_path, GOOD, cleanup=cleanup), canary)
    assert line == ("cleanup.auth.bearer: environment variable SHOWINGS_TOKEN is not set (cleanup could not "
                    "authenticate); fix: set it where the run's tasks run, or change the scenario's cleanup.auth")


def test_a_cleanup_hook_without_its_function_is_refused_before_any_load(tmp_path):
    (tmp_path / "team_cleanup.py").write_text("def other(context):\n    return {}\n")
    with Canary() as canary:
        line = refused(scenario(tmp_path, GOOD, cleanup={"hook": "team_cleanup.py:clean_up"}), canary)
    assert line.startswith("cleanup.hook: team_cleanup.py has no top-level function 'clean_up'; fix: ")
