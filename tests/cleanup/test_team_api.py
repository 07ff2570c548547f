"""A team's plain locustfile against an API nobody here wrote, run as a new user would: ``stampede run``.

json-server (from npm) serves ``/showings``; the locustfile has no Stampede
import and tags what it books with ``STAMPEDE_RUN_TAG``. With the scenario's
``creates`` and ``cleanup`` declarations, not one showing of the run is left;
without them the run fails loudly (exit 4), saying what is left; a half
declaration is refused before any load.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from stampede.core.verdict import Exit

pytestmark = pytest.mark.integration
TEAM = Path(__file__).resolve().parent / "team_api"
POSTCODE = "Gedimino pr. 9, LT-01103 Vilnius"
RUN_TIMEOUT_S = 240


def stampede_run(target: str, scenario: Path, out: Path, run_id: str, *, watch_ledger: bool = False):
    """``stampede run`` in a process of its own; with ``watch_ledger``, when the ledger first held an entity."""
    process = subprocess.Popen(
        [sys.executable, "-m", "stampede.surfaces.cli", "run", "--target", target, "--scenario", str(scenario),
         "--workers", "0", "--out", str(out), "--run-id", run_id],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ),
    )
    first_entity_at = None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while watch_ledger and process.poll() is None and time.monotonic() < deadline:
        ledger = out / "ledger.jsonl"
        if first_entity_at is None and ledger.exists() and '"k":"showing"' in ledger.read_text():
            first_entity_at = time.monotonic()
        time.sleep(0.2)
    stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    return process.returncode, stdout, stderr, first_entity_at, time.monotonic()


def team_scenario(tmp_path: Path, **changes) -> Path:
    """The team's scenario next to its locustfile, with some keys changed (``None`` removes one)."""
    data = yaml.safe_load((TEAM / "showings.yaml").read_text())
    data["locustfile"] = str(TEAM / "showings_locustfile.py")
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path = tmp_path / "scenario.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def others(api) -> list[int]:
    """Showings that are not the run's, there before it starts."""
    import httpx

    with httpx.Client(base_url=api.base_url, timeout=10, trust_env=False) as client:
        return [client.post("/showings", json={"listing": 1, "notes": n}).json()["id"]
                for n in ("a buyer's own viewing", POSTCODE, "LT-cliteam1x viewing")]


def test_declared_in_the_scenario_not_one_showing_of_the_run_is_left(json_api, tmp_path):
    kept = others(json_api)
    out = tmp_path / "run"
    code, stdout, stderr, first_entity_at, ended_at = stampede_run(
        json_api.base_url, team_scenario(tmp_path), out, "cliteam1", watch_ledger=True)
    assert code == Exit.PASS, stdout[-3000:] + stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    cleanup = results["cleanup"]
    assert cleanup["created"] > 20 and cleanup["left"] == 0 and cleanup["ok"] and cleanup["proof"] == "search"
    assert cleanup["deleted"] == cleanup["created"] and cleanup["error"] is None
    assert sorted(s["id"] for s in json_api.items("showings")) == sorted(kept)  # only what was not the run's
    # the run tag reached the plain locustfile through its environment: everything it booked carried it
    ledger = [json.loads(line) for line in (out / "ledger.jsonl").read_text().splitlines()]
    assert ledger[0]["run_tag"] == results["run_tag"] == "LT-cliteam1"
    assert sum(1 for line in ledger if line.get("k") == "showing") == cleanup["created"]
    # written while the run went, not at its end
    assert first_entity_at is not None and ended_at - first_entity_at > 5
    assert f"cleanup: created {cleanup['created']}, deleted {cleanup['deleted']}, left 0" in stdout


def test_without_a_declaration_the_run_fails_loudly_and_says_what_is_left(json_api, tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr, _, _ = stampede_run(
        json_api.base_url, team_scenario(tmp_path, creates=None, cleanup=None), out, "cliteam2")
    assert code == Exit.LEFT_BEHIND, stdout[-3000:] + stderr[-3000:]
    left = [s for s in json_api.items("showings") if "LT-cliteam2" in s["notes"]]
    assert left  # the run did leave data: nothing claims otherwise
    cleanup = json.loads((out / "results.json").read_text())["cleanup"]
    assert cleanup["left"] is None and cleanup["ok"] is False
    assert "no cleanup declared and nothing recorded as created" in cleanup["error"]
    # said first: the CLI table, the report (written after cleanup) and the exit code
    assert stdout.lstrip().startswith("CLEANUP INCOMPLETE: an unknown number of test entities"), stdout[:500]
    headline = re.search(r"<h1>(.*?)</h1>", (out / "report.html").read_text(), re.S).group(1)
    assert headline.strip().startswith("CLEANUP INCOMPLETE"), headline
    assert "test data left on the target: an unknown number of entities" in stderr


def test_what_it_creates_without_how_to_remove_it_is_refused_before_any_load(json_api, tmp_path):
    out = tmp_path / "run"
    code, stdout, stderr, _, _ = stampede_run(json_api.base_url, team_scenario(tmp_path, cleanup=None), out, "cliteam3")
    assert code == Exit.REFUSED
    assert "creates[0].kind: 'showing' has no cleanup declared; fix: add cleanup.kinds.showing" in stderr
    assert len(stderr.strip().splitlines()) == 1 and json_api.items("showings") == []  # nothing was sent
