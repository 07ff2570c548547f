"""Target leases in the shared state DB: keyed by resolved address and port, acquired atomically."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from stampede.core.errors import Refusal
from stampede.plan.target import Target, parse_target
from stampede.safety import lease


def _target(url: str, *addresses: str) -> Target:
    parsed = parse_target(url)
    return Target(parsed.scheme, parsed.host, parsed.port, parsed.path, addresses)


@pytest.fixture(autouse=True, params=["sqlite", "postgresql"])
def own_state(request, tmp_path, monkeypatch):
    """Each test its own state database: SQLite in its own reports folder (the embedded default), or a fresh
    PostgreSQL database (a deployment's shared state, where the atomicity is PostgreSQL's, not SQLite's lock)."""
    from stampede.infra.databases import FreshDatabase, postgres_problem
    from stampede.state import db

    monkeypatch.setenv("STAMPEDE_REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.delenv("STAMPEDE_STATE_URL", raising=False)
    db.dispose_all()
    if request.param == "sqlite":
        yield
        db.dispose_all()
        return
    problem = postgres_problem()
    if problem:
        pytest.skip(f"no PostgreSQL for the shared-state lease test: {problem}")
    with FreshDatabase("stampede_lease") as database:
        monkeypatch.setenv("STAMPEDE_STATE_URL", database.url)
        yield
        db.dispose_all()  # close the pool before the database is dropped


def test_localhost_127_0_0_1_and_ipv6_loopback_are_one_target():
    keys = {lease.lease_keys(_target(url, *addresses)) for url, addresses in [
        ("http://localhost:8000/v1", ("127.0.0.1", "::1")),
        ("http://127.0.0.1:8000/v1", ("127.0.0.1",)),
        ("http://[::1]:8000/v1", ("::1",)),
        ("http://127.0.0.2:8000", ("127.0.0.2",)),
    ]}
    assert keys == {("loopback:8000",)}
    assert lease.lease_keys(_target("http://localhost:8001/v1", "127.0.0.1")) == ("loopback:8001",)
    assert lease.lease_keys(_target("https://api.example.invalid/v1", "192.0.2.7", "2001:db8::7")) == (
        "192.0.2.7:443", "[2001:db8::7]:443")


def test_a_name_and_its_address_are_one_lease():
    lease.acquire(_target("https://staging.example.invalid/v1", "192.0.2.7"), run_id="a", ttl_s=60, pid=None)
    with pytest.raises(lease.TargetBusy, match=r"another run \(run id a\) is active on 192.0.2.7:443"):
        lease.acquire(_target("https://192.0.2.7/v1", "192.0.2.7"), run_id="b", ttl_s=60, pid=None)


def test_a_run_holds_all_of_a_targets_addresses_or_none():
    lease.acquire(_target("https://one.example.invalid/v1", "192.0.2.8"), run_id="a", ttl_s=60, pid=None)
    with pytest.raises(lease.TargetBusy):
        lease.acquire(_target("https://two.example.invalid/v1", "192.0.2.7", "192.0.2.8"), run_id="b", ttl_s=60,
                      pid=None)
    # b holds nothing: its row for 192.0.2.7 was rolled back with the refusal
    lease.acquire(_target("https://three.example.invalid/v1", "192.0.2.7"), run_id="c", ttl_s=60, pid=None)
    assert lease.holder(_target("https://x.example.invalid/v1", "192.0.2.7"))["run_id"] == "c"


def test_the_same_run_takes_its_lease_again_and_release_gives_back_all_of_it():
    target = _target("http://localhost:8000/v1", "127.0.0.1", "::1")
    first = lease.acquire(target, run_id="run-1", run_tag="LT-run1xabc", ttl_s=60, pid=None)
    again = lease.acquire(target, run_id="run-1", run_tag="LT-run1xabc", ttl_s=120, pid=None)
    assert again.expires_at > first.expires_at and lease.active_run_tags() == {"LT-run1xabc"}
    assert lease.release(run_id="run-1") and not lease.release(run_id="run-1")
    assert lease.holder(target) is None and lease.active_run_ids() == set()


def test_a_dead_processs_lease_and_an_expired_one_are_taken_over():
    target = _target("http://127.0.0.1:8000/v1", "127.0.0.1")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lease.acquire(target, run_id="crashed-cli", ttl_s=3600, pid=dead.pid)
    assert lease.holder(target) is None
    lease.acquire(target, run_id="next", ttl_s=0.5, pid=None)
    with pytest.raises(lease.TargetBusy):
        lease.acquire(target, run_id="third", ttl_s=60, pid=os.getpid())
    time.sleep(0.6)
    lease.acquire(target, run_id="third", ttl_s=60, pid=os.getpid())
    assert lease.holder(target)["run_id"] == "third"


def test_a_refusal_is_one_line_with_the_way_out():
    target = _target("http://127.0.0.1:8000/v1", "127.0.0.1")
    lease.acquire(target, run_id="nightly", ttl_s=60, pid=None)
    with pytest.raises(Refusal) as refused:
        lease.acquire(target, run_id="manual", ttl_s=60, pid=None)
    text = str(refused.value)
    assert "\n" not in text and "fix: wait for it to finish" in text and "stampede lease release nightly" in text


RACER = textwrap.dedent("""
    import sys, time
    from stampede.plan.target import Target
    from stampede.safety import lease
    start = float(sys.argv[2])
    while time.time() < start:
        pass
    try:
        lease.acquire(Target("http", "localhost", 8000, "/v1", ("127.0.0.1", "::1")), run_id=sys.argv[1],
                      ttl_s=60, pid=None)
        print("won")
    except lease.TargetBusy:
        print("busy")
""")


def test_racing_preflights_in_separate_processes_never_both_win(tmp_path):
    from stampede.state import db

    db.engine(tables=(lease.leases,))  # create the table first: the race is about the rows
    start = time.time() + 3
    racers = [subprocess.Popen([sys.executable, "-c", RACER, f"racer-{i}", str(start)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=dict(os.environ)) for i in range(6)]
    outcomes = []
    for racer in racers:
        out, err = racer.communicate(timeout=120)
        outcomes.append(out.strip() or err.strip()[-300:])
    assert sorted(outcomes) == ["busy"] * 5 + ["won"], outcomes
    assert len(lease.active_run_ids()) == 1
