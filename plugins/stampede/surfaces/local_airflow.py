"""``make airflow``: a local Airflow for trying the DAGs from the UI, with the demo target beside it.

What it starts, all on 127.0.0.1 (nothing else listens: the scheduler and the
triggerer run with ``--skip-serve-logs``, and the API server reads task logs
from the log folder):

- the demo target on a free port, and an environments file
  (``$AIRFLOW_HOME/environments.yaml``, ``STAMPEDE_ENVIRONMENTS_FILE``) whose
  ``local`` environment lists it, so ``loadtest_manual`` triggered from the
  form with its defaults (scenario ``smoke``, environment ``local``, no target)
  loads the demo target;
- Airflow's API server on ``--port`` with ``[api] base_url`` and the execution
  API URL set to match, the scheduler (LocalExecutor, a few parallel tasks:
  this machine has 2 cores), the dag-processor and the triggerer, each started
  as this interpreter's own ``airflow``;
- then it unpauses the on-demand DAGs (``loadtest_manual``,
  ``loadtest_breaking_point``: they run only when triggered) and prints the URL
  and the admin login. The scheduled DAGs stay paused; unpausing them starts
  no run before their next tick.

Ctrl-C (or SIGTERM) stops every process it started.

    python -m stampede.surfaces.local_airflow --port 8080
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path

import yaml

from stampede.infra.airflow_processes import AirflowProcesses, ApiClient, ApiError, base_env
from stampede.infra.demo_target.server import DemoTarget
from stampede.plan.environments import ENVIRONMENTS_FILE

ON_DEMAND_DAGS = ("loadtest_manual", "loadtest_breaking_point")
COMPONENTS = (
    ("api-server", ["api-server"]),
    ("scheduler", ["scheduler", "--skip-serve-logs"]),
    ("dag-processor", ["dag-processor"]),
    ("triggerer", ["triggerer", "--skip-serve-logs"]),
)
HEALTH = ["metadatabase", "scheduler", "dag_processor", "triggerer"]
PARALLEL_TASKS = 4  # LocalExecutor starts [core] parallelism worker processes (32 by default)
# A pipeline is a chain of short tasks: an idle scheduler that sleeps its default second between
# loops leaves each task's end unnoticed for half a second on average (12 tasks, ~6 s a run).
# A fifth of a second costs an idle loop's few milliseconds of CPU five times a second.
LOCAL_SCHEDULER = {"AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.2"}  # defaults: the user's own win


def environments_with_local_target(base_url: str, source: Path | None = None) -> str:
    """The environments config (``source``: $STAMPEDE_ENVIRONMENTS_FILE or the shipped file) with ``base_url`` first in ``local``."""
    source = source or Path(os.environ.get("STAMPEDE_ENVIRONMENTS_FILE") or ENVIRONMENTS_FILE)
    config = yaml.safe_load(source.read_text()) or {}
    local = config.setdefault("environments", {}).setdefault("local", {"allow_load": True})
    local["base_urls"] = [base_url, *[u for u in local.get("base_urls") or [] if u != base_url]]
    return yaml.safe_dump(config, sort_keys=False)


def passwords_file(home: Path) -> Path:
    """Where the simple auth manager keeps the generated passwords (``[core] simple_auth_manager_passwords_file``)."""
    configured = os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
    return Path(configured) if configured else home / "simple_auth_manager_passwords.json.generated"


def _wait_for_password(path: Path, user: str, timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text())[user]
        except (OSError, ValueError, KeyError):
            time.sleep(0.5)
    raise TimeoutError(f"no password for {user} in {path} after {timeout_s} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make airflow", description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8080, help="the UI and REST API port (default 8080)")
    args = parser.parse_args(argv)
    home = Path(os.environ.get("AIRFLOW_HOME") or Path.cwd() / "build" / "airflow").resolve()
    checkout = Path(__file__).resolve().parents[3]
    dags = Path(os.environ.get("AIRFLOW__CORE__DAGS_FOLDER") or checkout / "dags")
    plugins = Path(os.environ.get("AIRFLOW__CORE__PLUGINS_FOLDER") or checkout / "plugins")
    os.environ.setdefault("STAMPEDE_TARGET_PASSWORD", os.environ.get("STAMPEDE_DEMO_PASSWORD", "LoadTest123!"))

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    home.mkdir(parents=True, exist_ok=True)
    with DemoTarget(workdir=home / "demo-target") as target:
        environments = home / "environments.yaml"
        environments.write_text(environments_with_local_target(target.base_url))
        env = base_env(home=home, port=args.port, dags_folder=dags, plugins_folder=plugins)
        env |= {k: v for k, v in os.environ.items() if k.startswith("AIRFLOW__") and k not in env}  # the user's own
        env |= {**{k: v for k, v in LOCAL_SCHEDULER.items() if k not in os.environ},
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor", "AIRFLOW__CORE__PARALLELISM": str(PARALLEL_TASKS),
                "STAMPEDE_ENVIRONMENTS_FILE": str(environments)}
        airflow = AirflowProcesses(home / "processes", env)
        try:
            airflow.airflow("db", "migrate")
            for name, command in COMPONENTS:
                airflow.spawn(name, command)
            print(f"starting Airflow on {airflow.base_url} (logs: {airflow.root / 'logs'}) ...", flush=True)
            taken = airflow.wait_healthy(HEALTH)
            password = _wait_for_password(passwords_file(home), "admin")
            api = ApiClient(airflow.base_url, "admin", password)
            api.wait_dags(list(ON_DEMAND_DAGS))
            for dag_id in ON_DEMAND_DAGS:
                api.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
            print(
                f"\nAirflow is ready after {taken:.0f} s: {airflow.base_url}\n"
                f"  login:        admin / {password}   (kept in {passwords_file(home)})\n"
                f"  demo target:  {target.base_url} (the 'local' environment's first base URL)\n"
                f"  try:          DAGs -> loadtest_manual -> Trigger, keep the defaults, Trigger\n"
                f"  reports:      each run's 'Load test report' tab, or {os.environ.get('STAMPEDE_REPORTS_DIR', 'reports')}/\n"
                f"Ctrl-C stops everything.", flush=True)
            while not stopping:
                airflow.check_alive()
                time.sleep(1.0)
        except KeyboardInterrupt:
            pass
        except (RuntimeError, TimeoutError, ApiError) as exc:
            print(f"make airflow: {exc}", file=sys.stderr)
            return 1
        finally:
            print("stopping Airflow and the demo target ...", flush=True)
            left = airflow.stop()
            if left:
                print(f"still running: {left}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
