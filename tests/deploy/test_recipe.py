"""The deployment recipe and the package: the compose file validates, the images install from the locks, one name installed.

``docker compose config`` needs the docker client (on the machine) and the compose
plugin: ``make setup`` puts it in ``build/docker``; when it is missing this test
installs it the same way (``infra/deploy/compose-cli.sh``), so it runs on a fresh
machine too.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "infra" / "deploy"
COMPOSE_FILE = DEPLOY / "docker-compose.yaml"
AIRFLOW_SERVICES = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                    "airflow-worker", "airflow-init"}
# runtime dependencies no module imports by name, and why they are needed all the same
USED_WITHOUT_AN_IMPORT = {
    "apache-airflow-providers-standard": "airflow.sdk's @task decorator lives in it",
    "apache-airflow-providers-slack": "the slack connection type of slack_api_default",
}


def _docker_config() -> Path | None:
    """Where the compose plugin is (None: `docker compose` works as the machine stands)."""
    if shutil.which("docker") is None:
        pytest.fail("the docker client is missing; fix: install docker (the client alone: no engine is needed)")
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return None
    config = Path(os.environ.get("DOCKER_COMPOSE_CONFIG") or REPO / "build" / "docker")
    done = subprocess.run([str(DEPLOY / "compose-cli.sh"), str(config)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"could not install the compose plugin: {done.stderr[-2000:]}"
    return config


@pytest.fixture(scope="module")
def compose():
    config = _docker_config()
    env = dict(os.environ, **({"DOCKER_CONFIG": str(config)} if config else {}))

    def run(*args: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "compose", "-f", str(COMPOSE_FILE), *args], capture_output=True, text=True,
                              timeout=60, env={**env, **(extra_env or {})})

    return run


def test_docker_compose_config_validates_the_recipe(compose):
    done = compose("config", "--format", "json")
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert set(services) == AIRFLOW_SERVICES | {"postgres", "redis"}
    images = {services[name]["image"] for name in AIRFLOW_SERVICES}
    assert len(images) == 1, images  # every component runs the one image with Stampede installed
    assert all(services[n]["build"]["dockerfile"] == "infra/deploy/Dockerfile" for n in AIRFLOW_SERVICES)
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["STAMPEDE_STATE_URL"].startswith("postgresql+psycopg2://") and env["STAMPEDE_STATE_URL"].endswith("/stampede")
        assert env["STAMPEDE_ARTIFACTS_URL"].startswith("s3://")
    worker = services["airflow-worker"]
    assert worker["deploy"]["replicas"] >= 2 and not worker.get("volumes")  # no shared folder between workers
    ports = services["airflow-apiserver"]["ports"]
    assert [p["host_ip"] for p in ports] == ["127.0.0.1"]
    assert all(not services[n].get("ports") for n in services if n != "airflow-apiserver")


def test_the_compose_file_takes_the_deployments_own_settings(compose, tmp_path):
    env_file = tmp_path / "stampede.env"
    env_file.write_text((DEPLOY / "stampede.env.example").read_text().replace(
        "STAMPEDE_ARTIFACTS_URL=s3://your-bucket/stampede/runs", "STAMPEDE_ARTIFACTS_URL=s3://team-bucket/lt"))
    done = compose("--env-file", str(env_file), "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    env = json.loads(done.stdout)["services"]["airflow-worker"]["environment"]
    assert env["STAMPEDE_ARTIFACTS_URL"] == "s3://team-bucket/lt"


def test_a_broken_compose_file_is_refused(compose, tmp_path):
    """The validation can fail: a service that names an undefined anchor's key is an error."""
    broken = tmp_path / "docker-compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("command: scheduler", "command: scheduler\n    restrat: always"))
    done = subprocess.run(["docker", "compose", "-f", str(broken), "config"], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ, **({"DOCKER_CONFIG": str(_docker_config())}
                                                              if _docker_config() else {})))
    assert done.returncode != 0 and "restrat" in done.stderr


def test_the_helm_values_run_celery_workers_that_share_no_volume():
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    assert values["executor"] == "CeleryExecutor" and values["workers"]["replicas"] >= 2
    assert values["workers"]["persistence"]["enabled"] is False and values["dags"]["persistence"]["enabled"] is False
    env = {e["name"]: e.get("value") for e in values["env"]}
    assert env["STAMPEDE_ARTIFACTS_URL"].startswith("s3://")
    assert "stampede-secrets" in values["extraEnvFrom"]  # STAMPEDE_STATE_URL and the connection, as a secret
    assert values["airflowVersion"] == importlib.metadata.version("apache-airflow")


def _pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)", line):
            found[re.sub(r"\[.*\]", "", match.group(1)).lower()] = match.group(2)
    return found


def test_the_worker_lock_and_the_test_lock_pin_what_the_runtime_lock_pins():
    runtime = _pins(REPO / "requirements.txt")
    for lock in ("requirements-worker.txt", "requirements-test.txt"):
        pins = _pins(REPO / lock)
        differ = {name: (version, runtime[name]) for name, version in pins.items()
                  if name in runtime and runtime[name] != version}
        assert differ == {}, f"{lock} pins differently from requirements.txt: {differ}"
    worker = _pins(REPO / "requirements-worker.txt")
    assert {"locust", "gevent", "pyzmq", "geventhttpclient", "pyyaml", "psutil"} <= set(worker)
    assert "apache-airflow" not in worker
    assert not {"pytest-timeout", "moto", "cfn-lint"} & set(runtime)  # test tools stay out of the runtime lock
    assert "hdrhistogram" not in runtime | _pins(REPO / "requirements-test.txt")


def test_the_images_install_from_the_locks():
    worker = (REPO / "infra" / "aws" / "worker.Dockerfile").read_text()
    assert "pip install -r requirements-worker.txt" in worker and "grep" not in worker
    airflow = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^FROM apache/airflow:(\S+)-python3\.11$", airflow, re.M)
    assert base and base.group(1) == importlib.metadata.version("apache-airflow")
    assert "pip install --no-cache-dir -r /opt/stampede/requirements.txt" in airflow
    assert "requirements-test.txt" not in airflow + worker


@pytest.mark.integration
def test_a_worker_from_the_worker_lock_alone_loads_the_locust_files(tmp_path):
    """What the worker image installs is enough for the agent and Locust to load every Locust file a run uses."""
    venv = tmp_path / "worker-venv"
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "-q", "--python", sys.executable, str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run([*uv, "pip", "install", "-q", "--python", str(python), "-r", str(REPO / "requirements-worker.txt")],
                   check=True, timeout=600)
    subprocess.run([*uv, "pip", "install", "-q", "--python", str(python), "--no-deps", str(REPO)], check=True,
                   timeout=300)
    listed = subprocess.run(
        [str(python), "-c", "from stampede.load.runner import PLUGIN_FILE, STOCK_LOCUSTFILE; "
                            "print(f'{PLUGIN_FILE},{STOCK_LOCUSTFILE}')"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr[-2000:]
    locust = subprocess.run([str(venv / "bin" / "locust"), "-f", listed.stdout.strip(), "--list"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert locust.returncode == 0, locust.stderr[-2000:]
    assert "AgentUser" in locust.stdout or "User" in locust.stdout, locust.stdout
    agent = subprocess.run([str(python), "-m", "stampede.workers.agent", "--help"], capture_output=True, text=True,
                           timeout=60)
    assert agent.returncode == 0 and "--master-host" in agent.stdout
    assert not (venv / "lib" / "python3.11" / "site-packages" / "airflow").exists()


def test_the_package_installs_one_name_and_declares_what_it_imports(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("stampede-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"stampede", wheel.name.split("-py3")[0] + ".dist-info"}
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("apache-airflow==") for d in declared) and any(d.startswith("locust") for d in declared)
    source = "\n".join(p.read_text() for folder in ("plugins", "dags", "infra", "loadtests", "cleanup")
                       for p in (REPO / folder).rglob("*.py"))
    for requirement in declared:
        name = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
        if name in USED_WITHOUT_AN_IMPORT:
            continue
        modules = _import_names(name)
        assert any(re.search(rf"^\s*(import|from) {re.escape(m)}\b", source, re.M) for m in modules), \
            f"{name} is declared but nothing imports {modules}"


def _import_names(distribution: str) -> set[str]:
    """The importable names a distribution provides (``airflow.providers.amazon`` for a provider)."""
    if distribution == "apache-airflow":  # a meta-package: the code is apache-airflow-core's
        return {"airflow"}
    files = importlib.metadata.distribution(distribution).files or []
    names = set()
    for file in files:
        parts = file.parts
        if parts[0].endswith((".dist-info", ".data")) or parts[0] in ("..", "__pycache__") or file.suffix == ".pth":
            continue
        if parts[0] == "airflow" and len(parts) > 2 and parts[1] == "providers":
            names.add(f"airflow.providers.{parts[2]}")
        elif len(parts) == 1 and file.suffix in (".py", ".so"):
            names.add(parts[0].split(".")[0])
        elif len(parts) > 1:
            names.add(parts[0])
    return names or {distribution.replace("-", "_")}
