"""Generator figures: journey cost per request, users held, memory and CPU per user, latency error.

Both parts run against ``stampede.infra.fast_crm_target`` (an asyncio target far faster
than the generators) and drive the product's own pipeline functions
(``preflight`` → ``provision_workers`` → ``run_stages`` → ``validate``), so the
figures are the product's, not a special harness's. In ``users_held`` generator CPU
and memory come from the pipeline's own sampler (psutil, from outside the processes);
``journey_rps_ratio`` meters both sides with ``stampede.surfaces.bench.meter`` and counts
requests at the target, so neither side is measured differently from the other.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import yaml

from stampede.infra.fast_crm_target import FastCrmTarget
from stampede.steps.preflight import RunRequest, preflight
from stampede.workers.sizing import HELD_CPU_LIMIT_PCT
from stampede.steps.run_stages import run_stages
from stampede.steps.teardown import release_target
from stampede.surfaces.sequence import run_load
from stampede.surfaces.bench.figures import Figure
from stampede.surfaces.bench.meter import ProcessMeter, wait_until, whole_seconds
from stampede.core.records import GeneratorSample
from stampede.plan.scenario import load_scenario

log = logging.getLogger(__name__)

CPU_LIMIT_PCT = HELD_CPU_LIMIT_PCT  # users_held: every generator process under this share of one core
RATE_TOLERANCE = 0.05  # users_held: request rate within 5 % of the expected one
MAX_ERROR_RATE = 0.01
MIN_WINDOW_S = 5  # users_held: a level measured over fewer steady seconds was not reached
P95_TOLERANCE_MS = 5.0  # users_held: the stage's p95 within this of the target's own p95 over the same seconds
BARE_URL = "/escrows?limit=20"  # the journeys' most frequent request (the dashboard list)
# journey_rps: both sides wait the same between requests, so they run at about the same rate. With no
# wait each ran as fast as the target answered it, and the target answers the journeys' mix (creates,
# pages of JSON) more slowly than one URL: the journeys then ran at ~half the rate, their process idle
# more of the time, and an idle process pays more per request (an event-loop wake-up for each one
# instead of one for many); the ratio moved with how busy the target happened to be (0.75-1.09).
RATE_THINK_S = (0.02, 0.04)

BARE_LOCUSTFILE = '''
"""Bare Locust: FastHttpUser requesting one URL, the journeys' think time, no plugin, no checks."""
import os
from locust import FastHttpUser, between, task

class BareUser(FastHttpUser):
    wait_time = between(%r, %r)

    def on_start(self):
        response = self.client.post("/auth/login", json={
            "email": "agent@demo.stampede.local", "password": os.environ["STAMPEDE_TARGET_PASSWORD"]})
        self.headers = {"Authorization": "Bearer " + response.json()["token"]}

    @task
    def one_url(self):
        self.client.get(%r, headers=self.headers, name="bare")
''' % (*RATE_THINK_S, BARE_URL)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _stock_mix() -> dict[str, float]:
    return dict(load_scenario("normal").journeys)


def _write_scenario(path: Path, name: str, think: tuple[float, float], stages: list[dict]) -> Path:
    path.write_text(yaml.safe_dump({
        "name": name,
        "description": "written by stampede.surfaces.bench",
        "journeys": _stock_mix(),
        "think_time_s": list(think),
        "stages": stages,
        "thresholds": {},
        "abort_on_breach": False,
    }, sort_keys=False))
    return path


def _window_mean(samples: list[GeneratorSample], pid: int, start: float, end: float, attr: str) -> float | None:
    values = [getattr(s, attr) for s in samples if s.pid == pid and start < s.t <= end]
    return sum(values) / len(values) if values else None


# -- journey_rps_ratio ---------------------------------------------------------------
@dataclass
class RateRun:
    label: str
    requests: int
    failures: int
    seconds: float
    cpu_seconds: float

    @property
    def per_core(self) -> float:
        return self.requests / self.cpu_seconds if self.cpu_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label, "requests": self.requests, "failures": self.failures,
            "seconds": round(self.seconds, 1), "rps": round(self.requests / self.seconds, 1) if self.seconds else 0,
            "generator_cpu_pct": round(100 * self.cpu_seconds / self.seconds, 1) if self.seconds else 0,
            "rps_per_core": round(self.per_core, 1),
        }


def journey_rps_ratio(workdir: Path, *, quick: bool = False) -> Figure:
    """Journeys' requests per generator CPU-second / bare FastHttpUser's, one process each, same target.

    Runs bare, journeys, bare (journeys, bare again in a full run), so slow drift
    in the machine's load cancels out of the ratio.
    """
    users, warm_s, measure_s = (32, 5, 10) if quick else (48, 5, 15)
    order = ["bare", "journeys", "bare"] if quick else ["bare", "journeys", "bare", "journeys", "bare"]
    runs: list[RateRun] = []
    with FastCrmTarget(delay_ms=0, workdir=workdir) as target:
        for index, kind in enumerate(order):
            run_dir = workdir / f"rps-{index}-{kind}"
            run_dir.mkdir(parents=True, exist_ok=True)
            runner = _bare_rate if kind == "bare" else _journey_rate
            run = runner(target, run_dir, users=users, warm_s=warm_s, measure_s=measure_s)
            print(f"  {kind:<9} {run.requests / run.seconds:8.0f} req/s at {100 * run.cpu_seconds / run.seconds:4.0f}% "
                  f"of a core = {run.per_core:7.0f} req per CPU-second ({run.failures} failures)", flush=True)
            runs.append(run)
    bare = [r for r in runs if r.label == "bare"]
    journeys = [r for r in runs if r.label == "journeys"]
    bare_rate = sum(r.requests for r in bare) / sum(r.cpu_seconds for r in bare)
    journey_rate = sum(r.requests for r in journeys) / sum(r.cpu_seconds for r in journeys)
    failures = sum(r.failures for r in journeys)
    # every journey run against the bare runs either side of it: "in every run", not only on average
    pair_ratios = []
    for index, run in enumerate(runs):
        if run.label == "journeys":
            neighbours = [r for r in (runs[index - 1], runs[index + 1] if index + 1 < len(runs) else None) if r]
            pair_ratios.append(round(run.per_core / (sum(r.per_core for r in neighbours) / len(neighbours)), 3))
    return Figure(
        name="journey_rps_ratio",
        value=round(journey_rate / bare_rate, 3),
        measured_at=_now_iso(),
        details={
            "bare_rps_per_core": round(bare_rate, 1),
            "journeys_rps_per_core": round(journey_rate, 1),
            "journey_error_rate": round(failures / max(1, sum(r.requests for r in journeys)), 5),
            "pair_ratios": pair_ratios, "worst_pair_ratio": min(pair_ratios) if pair_ratios else None,
            "users": users, "measure_s": measure_s, "bare_url": BARE_URL,
            "think_time_s": list(RATE_THINK_S),
            "how": "one standalone Locust process each, the same users and think time on both sides (so about "
                   "the same request rate), fast_crm_target with 0 ms delay; "
                   "requests the target counted in the same whole seconds / the generator's CPU-seconds in "
                   "them (stampede.surfaces.bench.meter: read every 0.1 s, interpolated at the window's edges)",
            "runs": [r.to_dict() for r in runs],
        },
    )


def _first_requests(target: FastCrmTarget, process: subprocess.Popen, timeout_s: float) -> float:
    """The first whole second in which the target counted requests (the generator has started)."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and process.poll() is None:
        now = int(time.time())
        if target.stats(now - 1, now + 1)["requests"]:
            return float(now - 1)
        time.sleep(0.2)
    raise RuntimeError("bench: the bare Locust process sent nothing; see its locust.log")


def _bare_rate(target: FastCrmTarget, run_dir: Path, *, users: int, warm_s: int, measure_s: int) -> RateRun:
    locustfile = run_dir / "bare_locustfile.py"
    locustfile.write_text(BARE_LOCUSTFILE)
    command = [
        sys.executable, "-m", "locust", "-f", str(locustfile), "--headless", "--host", target.base_url,
        "-u", str(users), "-r", str(users), "-t", f"{warm_s + measure_s + 4}s", "--only-summary",
        "--csv", str(run_dir / "bare"), "--loglevel", "WARNING", "--stop-timeout", "0",
    ]
    with open(run_dir / "locust.log", "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        meter = ProcessMeter.tree(process.pid)
        try:
            start, end = whole_seconds(_first_requests(target, process, 60) + warm_s, measure_s)
            wait_until(end + 0.5)
            cpu = meter.cpu_between(start, end)
            process.wait(timeout=warm_s + measure_s + 60)
        finally:
            meter.stop()
            if process.poll() is None:
                process.kill()
                process.wait()
    counted = target.stats(start, end)
    with open(run_dir / "bare_stats.csv") as handle:  # failures of the whole run: bare's are not judged
        failures = next(int(r["Failure Count"]) for r in csv.DictReader(handle) if r["Name"] == "Aggregated")
    return RateRun(label="bare", requests=counted["requests"], failures=failures, seconds=end - start, cpu_seconds=cpu)


def _journey_rate(target: FastCrmTarget, run_dir: Path, *, users: int, warm_s: int, measure_s: int) -> RateRun:
    scenario = _write_scenario(run_dir / "journeys.yaml", "bench-journeys", RATE_THINK_S, [
        {"name": "warm", "users": users, "spawn_rate": users, "duration_s": warm_s},
        {"name": "measure", "users": users, "spawn_rate": users, "duration_s": measure_s + 2},
    ])
    plan = preflight(RunRequest(
        scenarios=(str(scenario),), target=target.base_url, run_id=f"bench-rps-{time.time_ns()}",
        workers=0, out_dir=str(run_dir), progress_interval_s=60,
    ))
    meter = ProcessMeter.locust_below(os.getpid())  # the Locust process the pipeline starts, as bare's meter
    try:
        run_stages(plan)
    finally:
        meter.stop()
        release_target(plan)  # the next run of this part uses the same target
    output = json.loads((run_dir / "locust_output.json").read_text())
    stage = next(s for s in output["stages"] if s.get("name") == "measure")
    start, end = whole_seconds(stage["start"], measure_s)
    seconds = [s for s in output["series"] if start <= s["t"] < end]
    counted = target.stats(start, end)
    return RateRun(
        label="journeys", requests=counted["requests"], failures=sum(s["failures"] for s in seconds),
        seconds=end - start, cpu_seconds=meter.cpu_between(start, end),
    )


# -- users_held, mib/cpu per 1,000 users, p95 error ------------------------------------
@dataclass
class Level:
    users: int
    rps: float
    expected_rps: float
    error_rate: float
    worker_cpu_pct: list[float]
    worker_rss_mib: list[float]
    worker_wait_pct: list[float]  # runnable but no core free: the machine, not the generator, was short
    master_cpu_pct: float | None
    p95_ms: float | None
    target: dict[str, Any]  # the target's own service time over the level's steady seconds
    window_s: float
    settled: dict[str, Any]  # the settled window (the rate's and CPU's seconds): both p95s and the target's CPU
    # in it, and when the level's users were all running against its planned ramp
    workers: int  # the local workers of the run that measured it

    @property
    def rate_ratio(self) -> float:
        return self.rps / self.expected_rps if self.expected_rps else 0.0

    @property
    def p95_error_ms(self) -> float | None:
        truth = self.target.get("p95_ms")
        return None if self.p95_ms is None or truth is None else round(self.p95_ms - truth, 2)

    @property
    def reached(self) -> bool:
        """Its users all ran for a measured window (not so when their spawn outlasted the level)."""
        return self.window_s >= MIN_WINDOW_S

    @property
    def held(self) -> bool:
        return (
            self.reached and bool(self.worker_cpu_pct) and max(self.worker_cpu_pct) < CPU_LIMIT_PCT
            and abs(self.rate_ratio - 1) <= RATE_TOLERANCE and self.error_rate <= MAX_ERROR_RATE
            and self.p95_error_ms is not None and abs(self.p95_error_ms) <= P95_TOLERANCE_MS
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "users": self.users, "held": self.held, "rps": round(self.rps, 1), "expected_rps": round(self.expected_rps, 1),
            "rate_ratio": round(self.rate_ratio, 4), "error_rate": round(self.error_rate, 5),
            "worker_cpu_pct": [round(c, 1) for c in self.worker_cpu_pct],
            "worker_rss_mib": [round(m, 1) for m in self.worker_rss_mib],
            "worker_wait_pct": [round(w, 1) for w in self.worker_wait_pct],
            "master_cpu_pct": None if self.master_cpu_pct is None else round(self.master_cpu_pct, 1),
            "p95_ms": self.p95_ms, "p95_error_ms": self.p95_error_ms, "target_service": self.target, "window_s": self.window_s,
            "settled": self.settled, "workers": self.workers, "reached": self.reached,
        }


def users_held(workdir: Path, *, quick: bool = False, delay_ms: float = 20.0) -> list[Figure]:
    """One stepped run of the stock mix (3–8 s think time) through the pipeline, judged level by level."""
    # a bounded climb past the goal (30,000) to 50,000: the first level not held is the measurement; all held, a
    # lower bound. Past 39,600 users a local run here needs a third worker (20,000 open files a process)
    if quick:
        levels, spawn_rate, hold_s, settle_s = [500, 1000, 2000], 200.0, 20, 5
    else:
        levels = [1000, 5000, 10_000, 15_000, 20_000, 25_000, 30_000, 35_000, 40_000, 45_000, 50_000]
        spawn_rate, hold_s, settle_s = 500.0, 25, 8
    run_dir = workdir / "users"
    run_dir.mkdir(parents=True, exist_ok=True)
    # one keep-alive connection per user ends at the target: past one process's open-file limit (20,000
    # in this sandbox, which cannot raise it) the port is served by several processes (SO_REUSEPORT)
    import resource

    nofile_hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    target_processes = max(1, math.ceil(levels[-1] / (0.75 * nofile_hard)))
    groups = worker_groups(levels)
    raw_levels, worker_counts = [], []
    with _local_cap(workdir, levels[-1]), FastCrmTarget(delay_ms=delay_ms, workdir=workdir, seed=500,
                                                        processes=target_processes) as target:
        for number, group in enumerate(groups):
            group_dir = run_dir if len(groups) == 1 else run_dir / f"workers-{number}"
            group_dir.mkdir(parents=True, exist_ok=True)
            levels_run, workers = _climb(target, group_dir, group, spawn_rate=spawn_rate, hold_s=hold_s,
                                         settle_s=settle_s)
            raw_levels += levels_run
            worker_counts += [workers] * len(levels_run)
    if not raw_levels:
        raise RuntimeError(f"bench: the stepped run measured no level; see {run_dir}/logs")
    # expected rate: the per-user rate of the lowest level, where the generators idle
    per_user = raw_levels[0][1] / raw_levels[0][0]
    levels_measured = [Level(u, rps, u * per_user, err, cpu, rss, wait, mcpu, p95, tgt, w, settled, workers)
                       for (u, rps, err, cpu, rss, wait, mcpu, p95, tgt, w, settled), workers
                       in zip(raw_levels, worker_counts)]
    for level in levels_measured:
        if not level.reached:
            print(f"  {level.users:>6} users: NOT reached: they were all running only "
                  f"{level.settled['spawned_after_s']:.0f} s after the level began (planned "
                  f"{level.settled['planned_ramp_s']} s), {level.window_s:.0f} s before it ended", flush=True)
            continue
        print(f"  {level.users:>6} users: {level.rps:7.1f} req/s ({level.rate_ratio:6.1%} of expected), "
              f"workers {', '.join(f'{c:.0f}%' for c in level.worker_cpu_pct)} of a core "
              f"(+{', '.join(f'{w:.0f}%' for w in level.worker_wait_pct)} waiting for one), "
              f"{sum(level.worker_rss_mib):.0f} MiB, p95 {level.p95_ms} ms (target {level.target.get('p95_ms')} ms; "
              f"settled {level.settled['p95_ms']} / {level.settled['target_p95_ms']}), "
              f"target {level.settled['target_cpu_pct']}% of a core, "
              f"errors {level.error_rate:.2%} -> {'held' if level.held else 'NOT held'}", flush=True)
    held = 0
    for level in levels_measured:
        if not level.held:
            break
        held = level.users
    sampled = [lv for lv in levels_measured if lv.worker_cpu_pct]  # a level whose workers were gone has no figures
    fit_levels = [lv for lv in sampled if lv.held] or sampled
    if len(fit_levels) < 3:
        fit_levels = sampled
    mem_slope, mem_base = _fit([lv.users for lv in fit_levels], [sum(lv.worker_rss_mib) for lv in fit_levels])
    cpu_slope, cpu_base = _fit([lv.users for lv in fit_levels], [sum(lv.worker_cpu_pct) for lv in fit_levels])
    at = next((lv for lv in levels_measured if lv.users == 10_000), levels_measured[-1])
    target_p95 = at.target.get("p95_ms")
    p95_errors = {lv.users: lv.p95_error_ms for lv in levels_measured}
    if target_processes > 1:
        print(f"  the target served the port from {target_processes} processes (each under the open-file hard "
              f"limit of {nofile_hard:,})", flush=True)
    common = {"nofile_hard_limit": nofile_hard, "target_processes": target_processes, "levels": [lv.to_dict() for lv in levels_measured], "delay_ms": delay_ms,
              # the workers of the run that measured the held level (its own level's default)
              "workers": next((lv for lv in reversed(levels_measured) if lv.held), levels_measured[0]).workers,
              "worker_groups": [[lv.users for lv in levels_measured if lv.workers == n] for n in sorted(set(worker_counts))],
              "spawn_rate": spawn_rate, "settle_s": settle_s, "per_user_rps": round(per_user, 5),
              "cpu_limit_pct": CPU_LIMIT_PCT, "rate_tolerance": RATE_TOLERANCE}
    stamp = _now_iso()
    return [
        Figure("users_held", held, stamp, lower_bound=held == levels_measured[-1].users, details={
            **common, "how": "highest level (and every level below it) with each worker's mean CPU under "
                             f"{CPU_LIMIT_PCT:.0f}% of a core, rate within 5 % of users x the lowest level's per-user "
                             f"rate, p95 within {P95_TOLERANCE_MS:.0f} ms of the target's own, errors under 1 %; "
                             "CPU, rate and errors over the steady part minus its first settle_s seconds, p95 over "
                             "the whole steady part (the pipeline's own stage figure) against the target's over "
                             "the same seconds; each level run with the local workers a run of its users gets "
                             "(worker_groups: one stepped run per worker count)"}),
        Figure("mib_per_1000_users", round(mem_slope * 1000, 2), stamp, details={
            "fit_users": [lv.users for lv in fit_levels], "base_mib": round(mem_base, 1),
            "fit_includes_levels_not_held": any(not lv.held for lv in fit_levels),
            "how": "least-squares slope of the workers' summed RSS over the levels"}),
        Figure("cpu_pct_per_1000_users", round(cpu_slope * 1000, 2), stamp, details={
            "fit_users": [lv.users for lv in fit_levels], "base_pct": round(cpu_base, 1),
            "fit_includes_levels_not_held": any(not lv.held for lv in fit_levels),
            "how": "least-squares slope of the workers' summed CPU (% of one core) over the levels"}),
        Figure("p95_error_ms", None if at.p95_ms is None or target_p95 is None else round(at.p95_ms - target_p95, 2), stamp,
               details={"users": at.users, "reported_p95_ms": at.p95_ms, "target_p95_ms": target_p95, "delay_ms": delay_ms,
                        "error_vs_delay_ms": None if at.p95_ms is None else round(at.p95_ms - delay_ms, 2),
                        "by_users": p95_errors, "goal_at_1000_ms": 3.0, "goal_at_30000_ms": 5.0,
                        "how": "the pipeline's steady-state p95 of the stage minus the p95 service time the target "
                               "measured itself (arrival to write) over the same seconds"}),
    ] + [
        Figure(f"p95_error_ms_{users}", p95_errors.get(users), stamp, details={
            "users": users, "level": next((lv.to_dict() for lv in levels_measured if lv.users == users), None),
            "how": "as p95_error_ms, at this level"})
        for users in (1000, 30_000) if not quick
    ]


def worker_groups(levels: list[int]) -> list[list[int]]:
    """The climb's levels in runs of the same local worker count, the product's default for each level.

    A run gets its workers from its peak (``default_worker_count``): one per core, more when the
    users' sockets pass one process's open-file limit. A level is measured with the workers a run
    of that many users gets, not with the top level's (3 workers on 2 cores for 20,000-file limits
    at 40,000 users: p95 +12 ms at 30,000 on 2026-12-03, against +0.9 ms with the 2 a 30,000-user run gets).
    """
    from stampede.workers.local import default_worker_count

    groups: list[list[int]] = []
    previous = None
    for users in levels:
        workers = default_worker_count(users)
        if workers != previous:
            groups.append([])
            previous = workers
        groups[-1].append(users)
    return groups


def _climb(target: FastCrmTarget, run_dir: Path, levels: list[int], *, spawn_rate: float, hold_s: int,
           settle_s: int) -> tuple[list[tuple], int]:
    """One stepped run of ``levels`` through the pipeline; each level's raw figures and the run's worker count."""
    from stampede.figures.stream import read_stream, requests_between

    stages, previous, planned_ramp = [], 0, []
    for users in levels:
        ramp_s = math.ceil((users - previous) / spawn_rate) + 2
        stages.append({"name": f"u{users}", "users": users, "spawn_rate": spawn_rate, "duration_s": ramp_s + hold_s})
        planned_ramp.append(ramp_s)
        previous = users
    scenario = _write_scenario(run_dir / "stepped.yaml", "bench-stepped", (3.0, 8.0), stages)
    plan = preflight(RunRequest(
        scenarios=(str(scenario),), target=target.base_url, run_id=f"bench-users-{time.time_ns()}",
        out_dir=str(run_dir), progress_interval_s=10,
    ))
    print(f"  {len(levels)} levels, {levels[0]:,} to {levels[-1]:,} users, {plan.workers} local workers "
          f"(the product's default for {levels[-1]:,} users on {os.cpu_count()} cores), about "
          f"{plan.load_duration_s} s", flush=True)
    # the target shares the cores with the generators: its CPU says how much of the machine was left
    root = psutil.Process(target.pid)
    target_meter = ProcessMeter(lambda: [root, *root.children()], interval_s=0.5)
    try:
        result = run_load(plan)
    finally:
        target_meter.stop()
        release_target(plan)  # the next run of the climb uses the same target
    output = json.loads((run_dir / "locust_output.json").read_text())
    samples = [GeneratorSample(**s) for s in json.loads((run_dir / "generator_samples.json").read_text())]
    series = {s["t"]: s for s in output["series"]}
    workers = sorted({s.pid for s in samples if s.role == "worker"})
    master = next((s.pid for s in samples if s.role == "master"), None)
    checkpoints, _torn = read_stream(run_dir / "stream")  # read once: every level's window comes from it
    raw = []
    for index, stage in enumerate(output["stages"]):
        if stage.get("steady_from") is None or stage.get("end") is None:
            continue
        steady_from, stage_end = int(stage["steady_from"]), int(stage["end"])
        start, end = steady_from + settle_s, stage_end - 1
        seconds = [series[t] for t in range(start, end) if t in series]
        requests = sum(s["requests"] for s in seconds)
        # only the worker processes alive in this window: an agent restarts its Locust worker
        # when the master quits, and those fresh processes must not count as idle workers
        cpu = {pid: v for pid in workers if (v := _window_mean(samples, pid, start, end, "cpu_pct")) is not None}
        live = list(cpu)
        # p95 error: the pipeline's steady p95 against the target's own over the same seconds (the
        # steady part); the settled window's pair beside it tells a generator's warm-up from the target's
        settled = requests_between(checkpoints, start, end)
        raw.append((stage["users"], requests / max(1, len(seconds)), sum(s["failures"] for s in seconds) / max(1, requests),
                    list(cpu.values()),
                    [_window_mean(samples, pid, start, end, "rss_mib") or 0.0 for pid in live],
                    [_window_mean(samples, pid, start, end, "wait_pct") or 0.0 for pid in live],
                    _window_mean(samples, master, start, end, "cpu_pct") if master else None,
                    result.stages[index].p95_ms, target.stats(steady_from, stage_end), float(len(seconds)),
                    {"from": start, "until": end, "p95_ms": settled.percentile_ms(0.95),
                     "target_p95_ms": target.stats(start, end).get("p95_ms"),
                     # a machine too busy to start the users at the planned rate leaves a level no steady part
                     "spawned_after_s": round(steady_from - float(stage["start"]), 1),
                     "planned_ramp_s": planned_ramp[index],
                     "target_cpu_pct": round(100 * target_meter.cpu_between(start, end) / (end - start), 1)
                     if end > start else None}))
    return raw, plan.workers


@contextlib.contextmanager
def _local_cap(workdir: Path, users: int):
    """The shipped environments with the loopback ``local`` cap raised to ``users`` (the climb passes 20,000)."""
    from stampede.plan.environments import ENV_FILE, ENVIRONMENTS_FILE

    document = yaml.safe_load(ENVIRONMENTS_FILE.read_text())
    local = document["environments"]["local"]
    local["max_users"] = max(int(local.get("max_users") or 0), users)
    path = workdir / "environments.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    before = os.environ.get(ENV_FILE)
    os.environ[ENV_FILE] = str(path)
    try:
        yield path
    finally:
        if before is None:
            os.environ.pop(ENV_FILE, None)
        else:
            os.environ[ENV_FILE] = before


def _fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line ``y = slope * x + base``."""
    n = len(xs)
    if n < 2:
        return 0.0, ys[0] if ys else 0.0
    mean_x, mean_y = sum(xs) / n, sum(ys) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / var if var else 0.0
    return slope, mean_y - slope * mean_x
