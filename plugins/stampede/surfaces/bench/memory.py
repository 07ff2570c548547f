"""master_rss_mib_per_h, worker_rss_mib_per_h: the generators' memory over a long run, measured, not assumed.

A real run through the pipeline (``run_load``: a Locust master and one worker, the stock journeys
against a loopback ``FastCrmTarget``, modest users, a checkpoint every second) is sampled from
outside every :data:`SAMPLE_S` seconds (psutil RSS of the master and the worker). After a warm-up
(the first :data:`WARM_FRACTION` of the run: connections opened, Locust's and the master's rolling
windows filled) a least-squares line through the samples gives the slope in MiB per hour; the
figure is that slope, with the RSS at the start and the end of the fit.

The measure is checked on itself first: a process that leaks :data:`PLANTED_MIB_PER_H` on purpose
and one that holds its memory are sampled the same way; the leak must be found (within half of
its size) and the flat one must not (``leak_detected``). A slope the measure cannot tell from a
planted leak proves nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from stampede.infra.fast_crm_target import FastCrmTarget
from stampede.steps.preflight import RunRequest, preflight
from stampede.surfaces.bench.figures import Figure
from stampede.surfaces.bench.generators import _write_scenario
from stampede.surfaces.sequence import run_load

SAMPLE_S = 3.0
WARM_FRACTION = 1 / 3
USERS = 60
THINK_S = (0.5, 1.5)
PLANTED_MIB_PER_H = 120.0  # 2 MiB a minute: small beside the run's RSS, large beside a flat one's noise
PLANTED_S = 60.0

_LEAKER = """
import sys, time
rate_mib_per_h, seconds = float(sys.argv[1]), float(sys.argv[2])
held, started = [], time.time()
while time.time() - started < seconds:
    if rate_mib_per_h:
        held.append(bytearray(int(rate_mib_per_h * 2**20 / 3600 / 10)))  # every 0.1 s, touched (bytearray zeroes it)
    time.sleep(0.1)
"""


def rss_slope(samples: list[tuple[float, float]], *, warm_s: float = 0.0) -> dict[str, float | int | None]:
    """The least-squares slope (MiB per hour) of ``(t, rss_mib)`` samples after ``warm_s``, and its ends."""
    if not samples:
        return {"slope_mib_per_h": None, "start_mib": None, "end_mib": None, "samples": 0}
    t0 = samples[0][0]
    kept = [(t, m) for t, m in samples if t - t0 >= warm_s] or samples
    if len(kept) < 3:
        return {"slope_mib_per_h": None, "start_mib": kept[0][1], "end_mib": kept[-1][1], "samples": len(kept)}
    t = np.array([p[0] for p in kept]) - kept[0][0]
    mib = np.array([p[1] for p in kept])
    slope_per_s, intercept = np.polyfit(t, mib, 1)
    return {"slope_mib_per_h": round(float(slope_per_s) * 3600, 3), "start_mib": round(float(mib[0]), 1),
            "end_mib": round(float(mib[-1]), 1), "fit_start_mib": round(float(intercept), 2),
            "fit_end_mib": round(float(intercept + slope_per_s * t[-1]), 2), "samples": len(kept),
            "fit_s": round(float(t[-1]), 1), "first_mib": round(samples[0][1], 1)}


class RssSampler(threading.Thread):
    """Samples the RSS of this process's descendants chosen by ``role_of`` every ``every_s`` seconds."""

    def __init__(self, role_of, *, every_s: float = SAMPLE_S) -> None:
        super().__init__(daemon=True)
        self.role_of = role_of
        self.every_s = every_s
        self.samples: dict[str, list[tuple[float, float]]] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            now = time.time()
            for child in psutil.Process().children(recursive=True):
                try:
                    role = self.role_of(child)
                    if role is not None:
                        self.samples.setdefault(role, []).append((now, child.memory_info().rss / 2**20))
                except psutil.Error:
                    continue
            self.stopped.wait(self.every_s)

    def stop(self) -> dict[str, list[tuple[float, float]]]:
        self.stopped.set()
        self.join(timeout=10)
        return self.samples


def planted_leak_check(seconds: float = PLANTED_S, rate_mib_per_h: float = PLANTED_MIB_PER_H) -> dict[str, object]:
    """The slope measure on a process leaking ``rate_mib_per_h`` and on one that does not."""
    leaking = subprocess.Popen([sys.executable, "-c", _LEAKER, str(rate_mib_per_h), str(seconds)])
    flat = subprocess.Popen([sys.executable, "-c", _LEAKER, "0", str(seconds)])
    roles = {leaking.pid: "leaking", flat.pid: "flat"}
    # only once exec'd: a child sampled between fork and exec has its parent's RSS
    sampler = RssSampler(lambda p: roles.get(p.pid) if _LEAKER in p.cmdline() else None, every_s=1.0)
    sampler.start()
    for process in (leaking, flat):
        process.wait(timeout=seconds + 30)
    samples = sampler.stop()
    leak = rss_slope(samples.get("leaking", []), warm_s=2.0)
    still = rss_slope(samples.get("flat", []), warm_s=2.0)
    found, quiet = leak["slope_mib_per_h"], still["slope_mib_per_h"]
    detected = (found is not None and quiet is not None and abs(found - rate_mib_per_h) <= rate_mib_per_h / 2
                and abs(quiet) < rate_mib_per_h / 10)
    return {"planted_mib_per_h": rate_mib_per_h, "found_mib_per_h": found, "flat_mib_per_h": quiet,
            "seconds": seconds, "leak_detected": detected}


def _per_minute(samples: list[tuple[float, float]]) -> list[float]:
    """The mean RSS of each minute of the run: the shape of the curve, warm-up included."""
    if not samples:
        return []
    t0, minutes = samples[0][0], {}
    for t, mib in samples:
        minutes.setdefault(int((t - t0) // 60), []).append(mib)
    return [round(sum(v) / len(v), 2) for _, v in sorted(minutes.items())]


def _role(process: psutil.Process) -> str | None:
    command = process.cmdline()  # this run's Locust processes (only this process's descendants are asked)
    if "--master" in command:
        return "master"
    if "--worker" in command:
        return "worker"
    return None


def memory_figures(workdir: Path, *, quick: bool = False, duration_s: int | None = None) -> list[Figure]:
    duration = duration_s or (150 if quick else 1200)
    check = planted_leak_check(30.0 if quick else PLANTED_S)
    print(f"  the measure itself: a planted leak of {check['planted_mib_per_h']:.0f} MiB/h found as "
          f"{check['found_mib_per_h']} MiB/h, a flat process {check['flat_mib_per_h']} MiB/h: "
          f"{'detected' if check['leak_detected'] else 'NOT DETECTED'}", flush=True)
    run_dir = workdir / "soak"
    run_dir.mkdir(parents=True, exist_ok=True)
    scenario = _write_scenario(run_dir / "soak.yaml", "bench-memory", THINK_S,
                               [{"name": "soak", "users": USERS, "spawn_rate": USERS, "duration_s": duration}])
    previous = os.environ.get("STAMPEDE_CHECKPOINT_S")
    os.environ["STAMPEDE_CHECKPOINT_S"] = "1"  # the fastest checkpoint: the stream's writing and forgetting, often
    sampler = RssSampler(_role)
    try:
        with FastCrmTarget(delay_ms=5.0, workdir=workdir, seed=500) as target:
            plan = preflight(RunRequest(scenarios=(str(scenario),), target=target.base_url,
                                        run_id=f"bench-memory-{time.time_ns()}", out_dir=str(run_dir),
                                        progress_interval_s=30, workers=1))
            print(f"  {USERS} users for {duration} s, a master and one worker, sampled every {SAMPLE_S:.0f} s "
                  f"(the fit after the first {WARM_FRACTION:.0%})", flush=True)
            sampler.start()
            result = run_load(plan)
    finally:
        samples = sampler.stop()
        if previous is None:
            os.environ.pop("STAMPEDE_CHECKPOINT_S", None)
        else:
            os.environ["STAMPEDE_CHECKPOINT_S"] = previous
    requests = sum(s.requests for s in result.stages)
    measured_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    (workdir / "rss_samples.json").write_text(json.dumps(samples))
    figures = []
    for role in ("master", "worker"):
        own = samples.get(role, [])
        if own:  # the load's seconds only: stopping (the master reads its stream back, the worker quits) is no trend
            own = [(t, mib) for t, mib in own if t - own[0][0] <= duration]
        fit = rss_slope(own, warm_s=duration * WARM_FRACTION)
        fit["last_half_mib_per_h"] = rss_slope(own, warm_s=duration / 2)["slope_mib_per_h"]
        fit["per_minute_mib"] = _per_minute(own)
        print(f"  {role}: {fit['first_mib']} MiB at the start, {fit['start_mib']} -> {fit['end_mib']} MiB over the fit "
              f"({fit['samples']} samples, {fit['fit_s']} s): {fit['slope_mib_per_h']} MiB/h "
              f"(last half {fit['last_half_mib_per_h']} MiB/h); per minute {fit['per_minute_mib']}", flush=True)
        figures.append(Figure(
            name=f"{role}_rss_mib_per_h", value=fit["slope_mib_per_h"], measured_at=measured_at,
            details={**fit, "duration_s": duration, "users": USERS, "requests": requests,
                     "checkpoint_s": 1, "planted_leak": check, "load_average": round(os.getloadavg()[0], 2),
                     "how": f"least-squares slope of the {role}'s RSS (psutil, every {SAMPLE_S:.0f} s) after the "
                            f"first {WARM_FRACTION:.0%} of a {duration} s run at {USERS} users on a loopback target"}))
    print(f"  {requests:,} requests; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores", flush=True)
    return figures
