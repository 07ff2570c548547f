"""The cleanup step SIGKILLed halfway and run again: it finishes, sends no DELETE twice, and deletes only the run's.

The step runs in a process of its own, as an Airflow task does, against
json-server (a third-party API that hands freed ids out again), with the
scenario's own cleanup declaration; a retry is a fresh process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from stampede.cleanup.ledger import LedgerEntry, encode_entries, encode_header
from stampede.infra.json_server import JsonServer
from stampede.plan.run_plan import RunPlan, run_tag_for
from stampede.plan.scenario import load_scenario

pytestmark = pytest.mark.integration
RUN_STEP = (
    "import json, sys\n"
    "from stampede.plan.run_plan import RunPlan\n"
    "from stampede.steps.cleanup import cleanup_test_data\n"
    "print(json.dumps({'clean': cleanup_test_data(RunPlan.from_dict(json.load(open(sys.argv[1])))).clean}))\n"
)
SHOWINGS = 400


def test_killed_halfway_and_retried_it_finishes_the_job_and_nothing_else(tmp_path):
    (tmp_path / "team.py").write_text("from locust import HttpUser\n")
    scenario_file = tmp_path / "showings.yaml"
    scenario_file.write_text(yaml.safe_dump({
        "name": "showings", "locustfile": "team.py", "journeys": {"ShowingUser": 1},
        "stages": [{"name": "s", "users": 1, "spawn_rate": 1, "duration_s": 5}],
        "creates": [{"request": "POST /showings", "kind": "showing", "id": "id"}],
        "cleanup": {"max_rate": 80, "kinds": {"showing": {  # slow enough to be killed halfway
            "delete": "DELETE /showings/{id}",
            "search": {"request": "GET /showings?q={run_tag}", "paging": {"page": "_page", "limit": "_limit", "size": 100}},
        }}},
    }))
    tag = run_tag_for("resume1")
    others = ["a buyer's own viewing", f"{tag}x viewing", "Gedimino pr. 9, LT-01103 Vilnius"]  # a look-alike, a postcode
    notes = [*others, *(f"{tag} viewing {i}" for i in range(SHOWINGS))]  # then the run's, as json-server numbers them
    with JsonServer(workdir=tmp_path / "json-server",
                    data={"showings": [{"id": i, "listing": 3, "notes": n} for i, n in enumerate(notes, 1)]}) as api:
        plan = RunPlan(run_id="resume1", target=api.base_url, environment="local",
                       scenarios=(load_scenario(str(scenario_file)),), workers=0, out_dir=str(tmp_path / "run"))
        assert plan.run_tag == tag
        _kill_and_retry(api, plan, tmp_path, before=[1, 2, 3], ours=list(range(4, 4 + SHOWINGS)))


def _kill_and_retry(json_api, plan: RunPlan, tmp_path: Path, *, before: list[int], ours: list[int]) -> None:
    tag = plan.run_tag
    run = tmp_path / "run"
    run.mkdir()
    (run / "ledger.jsonl").write_bytes(
        encode_header(run_tag=tag, target=plan.target, cleanup=plan.cleanup.to_dict())
        + encode_entries(LedgerEntry("showing", str(i), f"/showings/{i}") for i in ours))
    (tmp_path / "plan.json").write_text(json.dumps(plan.to_dict()))
    journal = run / "cleanup_journal.jsonl"

    first = subprocess.Popen([sys.executable, "-c", RUN_STEP, str(tmp_path / "plan.json")],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None:
        gone = journal.read_text().count('"gone"') if journal.exists() else 0
        if gone >= SHOWINGS // 3:
            break
        time.sleep(0.05)
    assert first.poll() is None, "the cleanup ended before it could be killed halfway"
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=10)
    left_after_kill = [s for s in json_api.items("showings") if tag in s["notes"].split()]
    assert 0 < len(left_after_kill) < SHOWINGS  # killed halfway
    booked = httpx.post(f"{json_api.base_url}/showings", json={"notes": "booked while the cleanup was down"}, timeout=10)
    after = [booked.json()["id"]]  # someone else's, created between the attempts

    retry = subprocess.run([sys.executable, "-c", RUN_STEP, str(tmp_path / "plan.json")],
                           capture_output=True, text=True, timeout=120)
    assert retry.returncode == 0, retry.stdout[-2000:] + retry.stderr[-2000:]
    assert json.loads(retry.stdout.strip().splitlines()[-1]) == {"clean": True}
    result = json.loads((run / "cleanup.json").read_text())
    assert result["error"] is None and result["left"] == 0 and result["ok"] is True
    assert result["resumed"] >= SHOWINGS // 3 and result["resumed"] + result["deleted"] + result["already_gone"] \
        + result["not_ours"] == SHOWINGS
    assert sorted(s["id"] for s in json_api.items("showings")) == sorted(before + after)  # nothing else deleted
    lines = [json.loads(line) for line in journal.read_text().splitlines() if line.startswith("[")]
    sent = Counter(tuple(line[1:3]) for line in lines if line[0] == "sent")
    assert set(sent) <= {("showing", str(i)) for i in ours}  # nothing but the run's was ever sent
    # sent twice: only what was in flight when the kill came, and only after a check found it still the run's
    assert sum(n > 1 for n in sent.values()) <= plan.cleanup.concurrency
