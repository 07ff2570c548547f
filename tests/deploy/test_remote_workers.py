"""Locust workers on other hosts: the master binds an address they reach, and they join over the network.

Two test hosts, each a network namespace of its own made here (``ip netns``,
a veth pair, 10.200.x.2 on the host's side of nothing but that link): they
share no loopback with this machine, so a worker there can reach the master
only through the address the master binds. The run is the pipeline's own cloud
path (``worker_provider=ecs`` against moto's ECS): provisioning starts the
tasks and records the agent command each container runs; here each host runs
exactly that command (the image's ``/app`` is this checkout). The target, the
demo CRM, listens on the first link's host side, the only address both hosts
and the master reach; its access log shows who sent each request.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
HOSTS = 2


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def _signal(pid: int, sig: int, *, group: bool = False) -> None:
    """Signal one process (or the group it leads) that this test started; never pid 0, 1 or this process."""
    if pid <= 1 or pid == os.getpid():
        raise ValueError(f"refusing to signal pid {pid}")
    try:
        os.killpg(pid, sig) if group else os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _in_our_network_namespace(pid: int) -> bool:
    """True when ``pid`` shares this test's network namespace (or cannot be examined): not one of ours to kill."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return True


def _free_subnets(count: int) -> list[int]:
    """``count`` third octets x of 10.200.x.0/24 that no interface of this machine uses."""
    used = _ip("-4", "-o", "addr").stdout
    candidates = [x for x in range(10, 250) if f"10.200.{x}." not in used]
    start = secrets.randbelow(len(candidates) - count)
    return candidates[start:start + count]


@pytest.fixture(scope="module")
def test_hosts():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("the multi-host test makes network namespaces: it needs root and iproute2 (ip)")
    tag = secrets.token_hex(2)
    made = []
    try:
        for index, octet in enumerate(_free_subnets(HOSTS)):
            ns, outside, inside = f"stp{tag}w{index}", f"stp{tag}h{index}", f"stp{tag}n{index}"
            _ip("netns", "add", ns)
            made.append({"ns": ns, "outside": outside, "address": f"10.200.{octet}.2",
                         "gateway": f"10.200.{octet}.1"})
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", ns)
            _ip("addr", "add", f"10.200.{octet}.1/24", "dev", outside)
            _ip("link", "set", outside, "up")
            for command in (["addr", "add", f"10.200.{octet}.2/24", "dev", inside], ["link", "set", inside, "up"],
                            ["link", "set", "lo", "up"], ["route", "add", "default", "via", f"10.200.{octet}.1"]):
                _ip("netns", "exec", ns, "ip", *command)
        yield made
    finally:
        for host in made:
            for pid in _ip("netns", "pids", host["ns"], check=False).stdout.split():
                if _in_our_network_namespace(int(pid)):  # never a process of this machine's own namespace
                    continue
                _signal(int(pid), signal.SIGKILL)
            _ip("netns", "del", host["ns"], check=False)
            _ip("link", "del", host["outside"], check=False)  # gone with the namespace already, normally


TARGET = """
import sys, uvicorn
from stampede.infra.demo_target.app import create_app
from stampede.infra.loopback_process import exit_when_orphaned
exit_when_orphaned(int(sys.argv[4]))
app = create_app(database_url="sqlite:///" + sys.argv[3], password="LoadTest123!")
uvicorn.run(app, host=sys.argv[1], port=int(sys.argv[2]), access_log=True, log_level="info")
"""


@pytest.fixture(scope="module")
def target(test_hosts, tmp_path_factory):
    """The demo CRM on the first link's host side (not loopback: the test hosts cannot reach this machine's)."""
    from stampede.core.netutil import free_port

    root = tmp_path_factory.mktemp("remote-target")
    host = test_hosts[0]["gateway"]
    port = free_port(host)
    log = root / "access.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([sys.executable, "-c", TARGET, host, str(port), str(root / "demo.db"),
                                    str(os.getpid())], stdout=out, stderr=subprocess.STDOUT)
    base_url = f"http://{host}:{port}/v1"
    from stampede.safety.health import probe

    deadline = time.monotonic() + 60
    while probe(base_url, timeout_s=2, attempts=1, pause_s=0) and time.monotonic() < deadline:
        time.sleep(0.5)
    yield base_url, log
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def cloud_env(aws, target, test_hosts, tmp_path, monkeypatch):
    """moto's ECS as the provider, no local stand-ins: the master on the address the test hosts reach."""
    from stampede.core.netutil import free_port

    base_url, _ = target
    master = test_hosts[0]["gateway"]
    monkeypatch.delenv("STAMPEDE_CLOUD_WORKERS_STANDIN", raising=False)
    monkeypatch.setenv("STAMPEDE_MASTER_HOST", master)
    monkeypatch.setenv("STAMPEDE_MASTER_BIND_HOST", master)
    monkeypatch.setenv("STAMPEDE_MASTER_PORT", str(free_port(master)))
    environments = tmp_path / "environments.yaml"
    environments.write_text(
        "environments:\n"
        f"  netlab:\n    base_urls: [\"{base_url}\"]\n    allow_load: true\n    max_users: 100\n"
        "    metrics: {source: none}\n"
        "  local: {allow_load: true, max_users: 100}\n")
    monkeypatch.setenv("STAMPEDE_ENVIRONMENTS_FILE", str(environments))
    return base_url


def _container_commands(run_id: str) -> list[list[str]]:
    """The command each ECS task of the run was started with (what its container would run)."""
    from stampede.workers.cloud import TAG_RUN_ID

    ecs = boto3.client("ecs")
    arns = ecs.list_tasks(cluster="stampede-workers", desiredStatus="RUNNING")["taskArns"]
    tasks = ecs.describe_tasks(cluster="stampede-workers", tasks=arns, include=["TAGS"])["tasks"] if arns else []
    return [t["overrides"]["containerOverrides"][0]["command"] for t in tasks
            if {"key": TAG_RUN_ID, "value": run_id} in t.get("tags", [])]


def _as_on_this_machine(command: list[str]) -> list[str]:
    """The image runs ``python`` with the checkout at /app; here both are this checkout's."""
    mapped = [sys.executable if part == "python" else part for part in command]
    return [part.replace("/app/", f"{REPO}/") for part in mapped]


def test_workers_on_other_hosts_join_the_master_over_the_network(cloud_env, test_hosts, target, tmp_path):
    from stampede.cost.estimate import Budgets
    from stampede.steps.cost_check import cost_check
    from stampede.steps.preflight import RunRequest, preflight
    from stampede.steps.provision import provision_workers
    from stampede.steps.run_stages import run_stages
    from stampede.steps.teardown import teardown_workers
    from stampede.steps.validate import validate

    base_url, access_log = target
    run_dir = tmp_path / "run"
    plan = preflight(RunRequest(scenarios=("smoke",), target=base_url, environment="netlab", run_id="netns-run",
                                workers=HOSTS, worker_provider="ecs", out_dir=str(run_dir)))
    cost_check(plan, budgets=Budgets())
    provision_workers(plan)
    commands = _container_commands(plan.run_id)
    assert len(commands) == HOSTS
    assert all(c[c.index("--master-host") + 1] == test_hosts[0]["gateway"] for c in commands)
    agents = []
    try:
        for host, command in zip(test_hosts, commands):
            with open(tmp_path / f"{host['ns']}.log", "wb") as out:
                agents.append(subprocess.Popen(["ip", "netns", "exec", host["ns"], *_as_on_this_machine(command)],
                                               stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                               env=dict(os.environ, PYTHONUNBUFFERED="1")))
        ran = run_stages(plan)
        result = validate(plan)
        in_namespaces = {h["ns"]: _ip("netns", "pids", h["ns"]).stdout.split() for h in test_hosts}
    finally:
        for agent in agents:  # each "container" stops: its agent's session, by pid (never a shell's kill)
            _signal(agent.pid, signal.SIGTERM, group=True)
        for agent in agents:
            try:
                agent.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _signal(agent.pid, signal.SIGKILL, group=True)
                agent.wait(timeout=5)
        teardown_workers(plan)
    assert ran.exit_code == 0 and result.verdict == "pass", (ran, [(s.name, s.requests, s.error_rate)
                                                                  for s in result.stages])
    assert all(pids for pids in in_namespaces.values())  # each host still ran its worker at the end
    senders: dict[str, int] = {}
    for line in access_log.read_text().splitlines():
        if match := re.search(r"(\d+\.\d+\.\d+\.\d+):\d+ - \"(GET|POST|PATCH|DELETE) /v1/(escrows|listings|auth)",
                              line):
            senders[match.group(1)] = senders.get(match.group(1), 0) + 1
    hosts = {h["address"] for h in test_hosts}
    assert hosts <= set(senders), senders  # both hosts sent load
    assert sum(senders[h] for h in hosts) >= 0.9 * sum(s.requests for s in result.stages)
    assert not {a for a in senders if a.startswith("127.")}, senders  # nothing came over loopback
    json.dumps(senders)
