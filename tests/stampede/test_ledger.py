"""The ledger in real Locust processes: a worker matches the scenario's ``creates`` rules, the master writes.

A master and a worker (two processes, as in a distributed run) against
json-server, with a plain locustfile: every showing it booked (201) is in the
master's ledger with its id and path, matched by request name or by URL path;
failed bookings and GETs are not; the file is on disk while the run goes.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stampede.cleanup.ledger import read_ledger
from stampede.infra.json_server import JsonServer
from stampede.plan.cleanup_declaration import parse_cleanup

pytestmark = pytest.mark.integration
PLUGIN = Path(__file__).resolve().parents[2] / "plugins" / "stampede" / "load" / "entry.py"
LOCUSTFILE = """\
from locust import HttpUser, constant, task


class Booker(HttpUser):
    wait_time = constant(0.05)

    @task(4)
    def book(self):
        self.client.post("/showings", json={"notes": "LT-ledger1 viewing"}, name="book a showing")

    @task(1)
    def book_nothing(self):  # json-server refuses a body that is not an object: no entity
        self.client.post("/showings", data="not json", headers={"Content-Type": "application/json"},
                         name="book badly")

    @task(2)
    def browse(self):
        self.client.get("/showings", params={"_limit": 5})
"""
STAGE_S = 8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_worker_records_what_the_rules_match_and_the_master_writes_it_while_the_run_goes(tmp_path):
    (tmp_path / "team.py").write_text(LOCUSTFILE)
    cleanup = parse_cleanup({"kinds": {"showing": {"delete": "DELETE /showings/{id}"}}},
                            lambda f, p, x: ValueError(p), source="t")
    with JsonServer(workdir=tmp_path / "api", data={"showings": []}) as api:
        plan = {
            "run_id": "ledger1", "run_tag": "LT-ledger1", "target": api.base_url, "journeys": {"Booker": 1},
            "think_time_s": [0.05, 0.05],
            "stages": [{"name": "s", "scenario": "t", "users": 3, "spawn_rate": 3, "duration_s": STAGE_S,
                        "thresholds": {}, "abort": False}],
            "progress_interval_s": 2,
            "creates": [{"request": "POST /showings", "status": [201], "kind": "showing", "id": "id"}],
            "cleanup": cleanup.to_dict(),
        }
        ledger, out, port = tmp_path / "ledger.jsonl", tmp_path / "out.json", free_port()
        files = f"{PLUGIN},{tmp_path / 'team.py'}"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        master = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", files, "--headless", "--host", api.base_url, "--master",
             "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port), "--expect-workers", "1",
             "--stampede-plan", json.dumps(plan), "--stampede-out", str(out), "--stampede-ledger", str(ledger),
             "--json-file", str(tmp_path / "stats"), "--exit-code-on-error", "0", "Booker"],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        worker = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", files, "--worker", "--master-host", "127.0.0.1",
             "--master-port", str(port)], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            mid_run = None
            deadline = time.monotonic() + 90
            while master.poll() is None and time.monotonic() < deadline:
                if mid_run is None and ledger.exists() and '"k":"showing"' in ledger.read_text():
                    mid_run = ledger.read_text().count('"k":"showing"')  # already on disk while the load runs
                time.sleep(0.2)
            logs = master.communicate(timeout=30)[0]
        finally:
            for process in (master, worker):
                if process.poll() is None:
                    process.kill()
                    process.wait()
        assert master.returncode == 0, logs[-3000:]
        stats = {f"{s['method']} {s['name']}": s for s in json.loads((tmp_path / "stats.json").read_text())}
        booked = stats["POST book a showing"]["num_requests"] - stats["POST book a showing"]["num_failures"]
        on_target = api.items("showings")

    written = read_ledger([ledger])
    assert mid_run and mid_run < booked  # written as the run went, not at its end
    assert written.run_tag == "LT-ledger1" and written.target == plan["target"] and written.cleanup == plan["cleanup"]
    assert booked > 50 and stats["POST book badly"]["num_requests"] > 0  # some bookings failed: not entities
    assert written.kinds() == {"showing": booked} == json.loads(out.read_text())["created"]
    assert sorted(int(e.id) for e in written.entities.values()) == sorted(s["id"] for s in on_target)
    assert all(e.url == f"/showings/{e.id}" for e in written.entities.values())
