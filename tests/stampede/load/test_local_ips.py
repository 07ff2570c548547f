"""Source addresses (``local_ips``): more users than the kernel has source ports for, from one machine.

The unit half parses and checks what a user may type. The real half runs in a
network namespace made here whose ephemeral range is 20 ports (the kernel's
default is 28,232: the 30,000-user case, scaled down 1,400 times): there 25
connections from one address fail with the one-line cause, from two addresses they
all connect, and a whole ``stampede run`` of 40 users (a worker process, the plan
reaching it at test start) gets the 127.0.0.x addresses it needs by itself, every
user connected, the target counting connections from each of them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import textwrap

import pytest

from stampede.core.errors import Refusal
from stampede.plan import local_ips as local_ips_rules
from stampede.plan.local_ips import auto_local_ips, check_bindable, parse_local_ips, refuse_unless_fit

PORTS = (40000, 40019)  # the namespace's whole ephemeral range: 20 source ports per address and destination
TARGET_PORT = 18080  # below that range, in a namespace nothing else uses


# -- what a user may type ----------------------------------------------------------------------------------
def test_addresses_ranges_and_lists_parse_in_order_once():
    assert parse_local_ips("127.0.0.1-127.0.0.3, 127.0.0.2 ::1") == ("127.0.0.1", "127.0.0.2", "127.0.0.3", "::1")
    assert parse_local_ips(["127.0.0.9", "127.0.0.8,127.0.0.9"]) == ("127.0.0.9", "127.0.0.8")
    assert parse_local_ips(None) == parse_local_ips("") == parse_local_ips([]) == ()


@pytest.mark.parametrize(("value", "expected"), [
    ("localhost", "'localhost' is not an IP address"),
    ("127.0.0.9-127.0.0.1", "ends before it starts; fix: write it as 127.0.0.1-127.0.0.9"),
    ("127.0.0.1-127.0.9.1", "holds more than 256 addresses"),
    ("0.0.0.0", "0.0.0.0 is not an address a connection can come from"),
    ("224.0.0.1", "is not an address a connection can come from"),
    (7, "must be text or a list of addresses (got int)"),
])
def test_bad_input_is_one_line_naming_the_field_and_the_fix(value, expected):
    with pytest.raises(Refusal) as refused:
        parse_local_ips(value)
    line = str(refused.value)
    assert line.startswith("local_ips: ") and expected in line and "fix:" in line and "\n" not in line


def test_an_address_this_machine_lacks_is_refused_by_binding_to_it():
    check_bindable(("127.0.0.1", "127.0.0.77"))  # all of 127.0.0.0/8 is this machine's
    with pytest.raises(Refusal, match=r"local_ips: 192\.0\.2\.7 is not an address of this machine \(EADDRNOTAVAIL\)"):
        check_bindable(("127.0.0.1", "192.0.2.7"))  # TEST-NET-1: never an interface's


def test_enough_addresses_for_the_users(monkeypatch):
    monkeypatch.setattr(local_ips_rules, "source_ports", lambda: 28_232)  # Linux's default range
    assert auto_local_ips(20_000, True) == ()  # one address serves 22,585 connections (80 %)
    assert auto_local_ips(30_000, True) == ("127.0.0.1", "127.0.0.2")
    assert auto_local_ips(30_000, False) == ()  # a remote target: refused below, not guessed
    refuse_unless_fit(30_000, ("127.0.0.1", "127.0.0.2"))
    with pytest.raises(Refusal, match=r"local_ips: 30000 users need 2 source addresses .* 1 given; fix: give 2"):
        refuse_unless_fit(30_000, ())


# -- the real thing, in a namespace with a 20-port range ----------------------------------------------------
def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@pytest.fixture
def small_range_namespace():
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.fail("this test makes a network namespace: it needs root and iproute2 (ip)")
    ns = f"stpports{secrets.token_hex(3)}"
    _ip("netns", "add", ns)
    try:
        _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")
        _ip("netns", "exec", ns, "sysctl", "-q", "-w", f"net.ipv4.ip_local_port_range={PORTS[0]} {PORTS[1]}")
        yield ns
    finally:
        own = os.stat("/proc/self/ns/net").st_ino
        for pid in _ip("netns", "pids", ns, check=False).stdout.split():
            try:
                if os.stat(f"/proc/{pid}/ns/net").st_ino != own:  # never a process of this machine's namespace
                    os.kill(int(pid), signal.SIGKILL)
            except OSError:
                pass
        _ip("netns", "del", ns, check=False)


@pytest.fixture
def counting_target(small_range_namespace, tmp_path, start_counting_target):
    counts = tmp_path / "peers.json"
    with start_counting_target(TARGET_PORT, counts, prefix=("ip", "netns", "exec", small_range_namespace)):
        yield small_range_namespace, counts


CONNECT = textwrap.dedent("""
    import json, sys
    from gevent import monkey; monkey.patch_all()
    import gevent
    from geventhttpclient import HTTPClient
    from stampede.load.fixes import patch_connection_pool, source_addresses, use_source_addresses

    patch_connection_pool()
    use_source_addresses(json.loads(sys.argv[2]))
    import urllib3

    clients, errors = [], []
    for _ in range(int(sys.argv[3])):
        try:
            if sys.argv[4] == "urllib3":  # requests' HttpUser
                client = urllib3.HTTPConnectionPool("127.0.0.1", int(sys.argv[1]), maxsize=1, retries=False, timeout=5)
                client.request("GET", "/ping")
            else:  # FastHttpUser and the stock journeys
                client = HTTPClient("127.0.0.1", int(sys.argv[1]), connection_timeout=5, network_timeout=5, concurrency=1)
                client.get("/ping").read()
            clients.append(client)  # its connection stays open: the source port stays taken
        except (OSError, urllib3.exceptions.HTTPError) as error:  # urllib3 wraps the OSError
            errors.append(str(error))
    print(json.dumps({"connected": len(clients), "errors": errors, "bound": source_addresses().bound}))
""")


def _connect(ns: str, addresses: list[str], count: int, client: str = "geventhttpclient") -> dict:
    completed = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CONNECT, str(TARGET_PORT),
                                json.dumps(addresses), str(count), client], capture_output=True, text=True, timeout=60)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.integration
def test_one_address_runs_out_of_source_ports_and_says_so_two_do_not(counting_target):
    ns, counts = counting_target
    alone = _connect(ns, [], 25)
    assert alone["connected"] == 20, alone  # the range's 20 ports, then none
    assert len(alone["errors"]) == 5, alone
    assert all(e.startswith("[Errno 99] no source port left toward 127.0.0.1:18080 from the kernel's one address")
               and "fix: more local_ips" in e and "\n" not in e for e in alone["errors"]), alone["errors"]

    # two other addresses (127.0.0.1's 20 ports wait out TIME_WAIT after the first process's exit)
    both = _connect(ns, ["127.0.0.2", "127.0.0.3"], 25)
    assert both["connected"] == 25 and both["errors"] == [], both
    assert both["bound"] == {"127.0.0.2": 13, "127.0.0.3": 12}, both  # in turn
    peers = json.loads(counts.read_text())
    assert peers == {"127.0.0.1": 20, "127.0.0.2": 13, "127.0.0.3": 12}, peers  # each connection's source, seen


@pytest.mark.integration
def test_requests_connections_come_from_the_addresses_too(counting_target):
    ns, counts = counting_target
    alone = _connect(ns, [], 22, "urllib3")
    assert alone["connected"] == 20 and len(alone["errors"]) == 2, alone
    assert all("no source port left toward 127.0.0.1:18080" in e for e in alone["errors"]), alone["errors"]
    both = _connect(ns, ["127.0.0.2", "127.0.0.3"], 25, "urllib3")
    assert both["connected"] == 25 and both["errors"] == [], both
    assert both["bound"] == {"127.0.0.2": 13, "127.0.0.3": 12}, both
    assert json.loads(counts.read_text()) == {"127.0.0.1": 20, "127.0.0.2": 13, "127.0.0.3": 12}


LOCUSTFILE = """
from locust import FastHttpUser, task


class PingUser(FastHttpUser):
    @task
    def ping(self):
        self.client.get("/ping")
"""


@pytest.mark.integration
def test_a_run_of_more_users_than_ports_gets_the_addresses_it_needs(counting_target, tmp_path):
    ns, counts = counting_target
    (tmp_path / "ping.py").write_text(LOCUSTFILE)
    scenario = tmp_path / "ping.yaml"
    scenario.write_text(textwrap.dedent("""
        name: ping
        locustfile: ping.py
        journeys: {PingUser: 1}
        think_time_s: [0.5, 1.0]
        stages:
          - {name: hold, users: 40, spawn_rate: 40, duration_s: 8}
        cleanup: none
    """))
    base = ["ip", "netns", "exec", ns, sys.executable, "-m", "stampede.surfaces.cli", "run",
            "--target", f"http://127.0.0.1:{TARGET_PORT}/v1", "--scenario", str(scenario), "--workers", "1"]

    # one address for 40 users, 16 planned ports each: refused before the first request
    refused = subprocess.run([*base, "--local-ips", "127.0.0.1", "--out", str(tmp_path / "refused")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr[-2000:]
    (line,) = [l for l in refused.stderr.splitlines() if l.startswith("stampede: refused:")]
    assert "local_ips: 40 users need 3 source addresses toward one target address (16 ports each" in line, line
    assert "1 given; fix: give 3 addresses" in line, line
    assert json.loads(counts.read_text()) == {}, "a refused run connected to the target"

    completed = subprocess.run([*base, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=180)
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    (stage,) = results["stages"]
    assert stage["requests"] > 0 and stage["failures"] == 0, stage
    peers = json.loads(counts.read_text())
    print(f"connections by source address: {peers}; stage {stage['requests']} requests, {stage['failures']} failed")
    # the health probes come from the kernel's choice (127.0.0.1); the users' 40 connections from the three in turn
    assert set(peers) == {"127.0.0.1", "127.0.0.2", "127.0.0.3"}, peers
    assert peers["127.0.0.2"] >= 13 and peers["127.0.0.3"] >= 13, peers
    assert sum(peers.values()) >= 40, peers
