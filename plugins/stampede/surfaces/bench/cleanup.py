"""Cleanup figures: entities cleaned per second, and the time to clean what the seed's normal scenario creates.

Every figure runs the product's own cleanup (``stampede.cleanup.run_data.clean_run``:
deletes from the ledger, the sweep, the proof by search) with the stock CRM
declaration, on entities that carry the run's tag:

- ``cleanup_per_s_demo``: against the demo target (FastAPI + SQLite, one process,
  sharing the 2 cores with the cleanup), entities resolved per second of the
  delete phase;
- ``cleanup_per_s_20ms``: against the fast CRM target answering every call in
  exactly 20 ms, the same figure: what the declaration's concurrency buys when
  the API, not the machine, sets the pace;
- ``cleanup_normal_s``: the whole cleanup (deletes, sweep, proof) of as many
  entities as the seed's ``normal`` scenario creates, on the demo target. The
  volume is measured, not guessed: a short run of the stock mix at the seed's
  think time (3–8 s) through the pipeline gives the entities its ledger recorded
  per user-second, times the user-seconds of ``normal``'s stages.

The entities are written straight into the demo target's SQLite file (they are
what the run left, not what the bench measures), and the ledger lists them as
the master would have.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from stampede.cleanup.api import Credentials
from stampede.cleanup.ledger import Ledger, LedgerEntry, read_ledger
from stampede.cleanup.run_data import clean_run
from stampede.core.records import CleanupResult
from stampede.infra.demo_target.server import DemoTarget
from stampede.infra.fast_crm_target import FastCrmTarget
from stampede.plan.cleanup_declaration import stock_declaration
from stampede.plan.run_plan import DEFAULT_ACCOUNTS, PASSWORD_ENV
from stampede.plan.scenario import load_scenario
from stampede.steps.preflight import RunRequest, preflight
from stampede.steps.run_stages import run_stages
from stampede.steps.teardown import release_target
from stampede.surfaces.bench.figures import Figure
from stampede.surfaces.bench.generators import _now_iso, _write_scenario

TAG = "LT-benchcleanup"


def cleanup_figures(workdir: Path, *, quick: bool = False) -> list[Figure]:
    credentials = Credentials(password=os.environ.get(PASSWORD_ENV, ""), accounts=dict(DEFAULT_ACCOUNTS))
    per_user_s, volume_run = _creations_per_user_second(workdir, quick=quick)
    user_seconds = _user_seconds(load_scenario("normal"))
    volume = round(per_user_s * user_seconds)
    print(f"  normal creates about {volume:,} entities ({per_user_s:.4f} per user-second x {user_seconds:,.0f} "
          f"user-seconds)", flush=True)

    cleaned = min(volume, 5_000) if quick else volume
    demo = _clean_demo(workdir, cleaned, credentials)
    print(f"  demo target: {cleaned:,} entities in {demo.duration_s:.1f} s, {demo.deletes_per_s:,.0f}/s deleted, "
          f"left {demo.left}", flush=True)
    per_kind = 2_000 if quick else 10_000
    fast = _clean_fast(workdir, per_kind, credentials)
    print(f"  20 ms target: {2 * per_kind:,} entities in {fast.duration_s:.1f} s, {fast.deletes_per_s:,.0f}/s "
          f"deleted, left {fast.left}", flush=True)

    at = _now_iso()
    normal_s = demo.duration_s if cleaned == volume else volume / demo.deletes_per_s
    return [
        Figure("cleanup_per_s_demo", demo.deletes_per_s, at, details={
            "how": "entities resolved per second of the delete phase, stock declaration, demo target on the same "
                   "2 cores", "entities": cleaned, "cleanup": _summary(demo)}),
        Figure("cleanup_per_s_20ms", fast.deletes_per_s, at, details={
            "how": "the same against the fast CRM target answering every call in 20 ms",
            "entities": 2 * per_kind, "concurrency": stock_declaration().concurrency, "cleanup": _summary(fast)}),
        Figure("cleanup_normal_s", round(normal_s, 1), at, details={
            "how": ("the whole cleanup (deletes, sweep, proof) of normal's volume on the demo target"
                    if cleaned == volume else "normal's volume over the demo rate (quick: a smaller volume was cleaned)"),
            "volume": volume, "creations_per_user_second": round(per_user_s, 5), "user_seconds": user_seconds,
            "measured_by": volume_run}),
    ]


def _creations_per_user_second(workdir: Path, *, quick: bool) -> tuple[float, dict]:
    """A short run of the stock mix at the seed's think time: what its ledger recorded, per user-second."""
    users, duration_s = (100, 40) if quick else (300, 90)
    run_dir = workdir / "volume"
    run_dir.mkdir(parents=True, exist_ok=True)
    scenario = _write_scenario(run_dir / "volume.yaml", "bench-volume", (3.0, 8.0), [
        {"name": "hold", "users": users, "spawn_rate": users, "duration_s": duration_s}])
    with FastCrmTarget(delay_ms=20, workdir=workdir, seed=200) as target:
        plan = preflight(RunRequest(scenarios=(str(scenario),), target=target.base_url, workers=0,
                                    run_id=f"bench-volume-{time.time_ns()}", out_dir=str(run_dir),
                                    progress_interval_s=30))
        try:
            run_stages(plan)
        finally:
            release_target(plan)
    ledger = read_ledger(run_dir.rglob("ledger.jsonl"))
    series = json.loads((run_dir / "locust_output.json").read_text())["series"]
    user_seconds = sum(row["users"] or 0 for row in series)
    return ledger.created / max(1, user_seconds), {"users": users, "duration_s": duration_s,
                                                   "created": ledger.created, "user_seconds": user_seconds}


def _user_seconds(scenario) -> float:
    """User-seconds of a closed-model scenario: each stage's ramp is linear at its spawn rate, then held."""
    total, previous = 0.0, 0
    for stage in scenario.stages:
        ramp_s = min(stage.duration_s, abs(stage.users - previous) / stage.spawn_rate)
        total += ramp_s * (stage.users + previous) / 2 + (stage.duration_s - ramp_s) * stage.users
        previous = stage.users
    return round(total)


def _clean_demo(workdir: Path, count: int, credentials: Credentials) -> CleanupResult:
    db = workdir / "demo-cleanup.db"
    with DemoTarget(db_path=db, workdir=workdir / "demo-schema"):
        pass  # the schema and the accounts
    escrows, listings = count * 4 // 5, count - count * 4 // 5  # the stock mix creates about four escrows per listing
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO escrows (property_address, closing_date, purchase_price, created_by, created_at) "
            "VALUES (?, '2027-01-15', 500000, 1, '2026-01-01T00:00:00Z')",
            [(f"{TAG}-{i:07d} 12 Oak St, Salem",) for i in range(escrows)])
        conn.executemany(
            "INSERT INTO listings (address, list_price, status, created_by, created_at) "
            "VALUES (?, 500000, 'active', 1, '2026-01-01T00:00:00Z')",
            [(f"{TAG}-{i:07d} 12 Oak St, Salem",) for i in range(listings)])
        ids = {kind: [row[0] for row in conn.execute(f"SELECT id FROM {kind} ORDER BY id")]
               for kind in ("escrows", "listings")}
    entries = [LedgerEntry(kind[:-1], str(i), f"/{kind}/{i}") for kind, found in ids.items() for i in found]
    with DemoTarget(db_path=db, workdir=workdir / "demo") as target:
        return _clean(target.base_url, entries, workdir / "demo-journal.jsonl", credentials)


def _clean_fast(workdir: Path, per_kind: int, credentials: Credentials) -> CleanupResult:
    seed = 100
    entries = [LedgerEntry(k, str(i), f"/{k}s/{i}") for k in ("escrow", "listing") for i in range(seed + 1, seed + 1 + per_kind)]
    with FastCrmTarget(delay_ms=20, workdir=workdir, seed=seed, seed_tagged=(TAG, per_kind)) as target:
        return _clean(target.base_url, entries, workdir / "fast-journal.jsonl", credentials)


def _clean(base_url: str, entries: list[LedgerEntry], journal: Path, credentials: Credentials) -> CleanupResult:
    ledger = Ledger()
    for entry in entries:
        ledger.add(entry)
    journal.unlink(missing_ok=True)
    result = clean_run(base_url=base_url, run_tag=TAG, declaration=stock_declaration(), ledger=ledger,
                       journal_path=journal, credentials=credentials)
    if not result.clean:
        raise RuntimeError(f"bench cleanup did not finish clean: left {result.left} ({result.error})")
    return result


def _summary(result: CleanupResult) -> dict:
    return {"deleted": result.deleted, "left": result.left, "duration_s": result.duration_s,
            "requests": result.requests, "throttled": result.throttled, "proof": result.proof}
