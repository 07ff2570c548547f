"""analysis_s_24h: validate, analyse and report a synthetic 24-hour endurance history.

The history is what the Locust master and the sampler would have written for
the endurance scenario (1,000 users, ramp, 24 h soak, ramp-down): a 1-second
series, per-stage/phase histograms of 20 endpoints with realistic (lognormal,
per-endpoint) latencies, and 1-second CPU/memory samples of a master and two
workers. the validate, analyse and report steps then run on it in a
fresh process, timed from its start (imports included) with its peak memory.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from stampede.surfaces.bench.figures import Figure
from stampede.core.histogram import LatencyHistogram
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import load_scenario

SCENARIO = "endurance"
ENDPOINTS = 20
USERS_RPS_PER_USER = 1 / 5.5
SAMPLES_PER_ENDPOINT = 20_000  # drawn, then scaled to the endpoint's request count (same shape)

_TIMED = """
import json, resource, sys, time
started = time.time()
from stampede.plan.run_plan import RunPlan
from stampede.steps.analyse import analyse
from stampede.steps.report import report
from stampede.steps.validate import validate
plan = RunPlan.from_dict(json.loads(open(sys.argv[1]).read()))
imported = time.time()
result = validate(plan)
validated = time.time()
analyse(plan)
report(plan)
reported = time.time()
print(json.dumps({"import_s": imported - started, "validate_s": validated - imported, "report_s": reported - validated,
                  "verdict": result.verdict, "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def analysis_24h(workdir: Path, *, quick: bool = False) -> Figure:
    scenario = load_scenario(SCENARIO)
    hours = 1 if quick else 24
    if quick:  # same shape, an hour long
        scenario = scenario.with_overrides(duration_s=3600)
    run_dir = workdir / "run"
    run_dir.mkdir(parents=True)
    plan = RunPlan(run_id=f"bench-analysis-{time.time_ns()}", target="http://127.0.0.1:9/v1", environment="local",
                   scenarios=(scenario,), workers=2, out_dir=str(run_dir))
    made = time.time()
    sizes = synthesise(plan, run_dir, rng=random.Random(24))
    made_s = time.time() - made
    plan_file = workdir / "plan.json"
    plan_file.write_text(json.dumps(plan.to_dict()))
    env = dict(os.environ, STAMPEDE_REPORTS_DIR=str(workdir / "reports"))
    started = time.time()
    completed = subprocess.run([sys.executable, "-c", _TIMED, str(plan_file)], capture_output=True, text=True,
                               env=env, timeout=600, check=False)
    elapsed = time.time() - started
    if completed.returncode != 0:
        raise RuntimeError(f"validate/report failed on the synthetic history: {completed.stderr[-2000:]}")
    timings = json.loads(completed.stdout.strip().splitlines()[-1])
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = run_dir / "report.html"
    print(f"  synthetic {hours} h history ({sizes['series']:,} seconds, {sizes['samples']:,} generator samples, "
          f"{sizes['requests']:,} requests; written in {made_s:.0f} s)", flush=True)
    print(f"  validate + report: {elapsed:.1f} s (imports {timings['import_s']:.1f} s, validate {timings['validate_s']:.1f} s, "
          f"report {timings['report_s']:.1f} s), peak {timings['max_rss_mib']:.0f} MiB", flush=True)
    return Figure(
        name="analysis_s_24h", value=round(elapsed, 1),
        measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        details={
            **{k: round(v, 2) if isinstance(v, float) else v for k, v in timings.items()},
            "hours": hours, "endpoints": ENDPOINTS, **sizes,
            "report_bytes": report.stat().st_size if report.exists() else None,
            "children_max_rss_mib": round(children.ru_maxrss / 1024, 1),
            "how": "the validate, analyse and report steps in a fresh process (imports included) on a synthetic "
                   "endurance history at 1-second resolution",
        },
    )


def synthesise(plan: RunPlan, run_dir: Path, *, rng: random.Random) -> dict[str, int]:
    """Write ``locust_output.json`` and ``generator_samples.json`` as a real endurance run would leave them."""
    start = float(int(time.time()) - plan.load_duration_s - 60)
    stages, series, phases, phase_seconds = [], [], {}, {}
    endpoints = _endpoints(rng)
    t = start
    previous_users = 0
    total_requests = 0
    for index, planned in enumerate(plan.locust_plan()["stages"]):
        ramp_s = min(planned["duration_s"], math.ceil(abs(planned["users"] - previous_users) / planned["spawn_rate"]))
        if planned["users"] <= previous_users:
            ramp_s = 0
        stage = {**planned, "index": index, "start": t, "end": t + planned["duration_s"],
                 "steady_from": int(t + ramp_s) if ramp_s < planned["duration_s"] else None}
        stages.append(stage)
        counts = {"ramp": 0, "steady": 0}
        for offset in range(planned["duration_s"]):
            phase = "ramp" if offset < ramp_s else "steady"
            if ramp_s:
                users = round(previous_users + (planned["users"] - previous_users) * min(1.0, offset / ramp_s))
            else:
                users = planned["users"] if phase == "steady" and planned["users"] else max(0, round(previous_users * (1 - offset / max(1, planned["duration_s"]))))
            requests = max(0, round(rng.gauss(users * USERS_RPS_PER_USER, math.sqrt(users * USERS_RPS_PER_USER + 1))))
            failures = 1 if requests and rng.random() < 0.002 else 0
            counts[phase] += requests
            base = 18 + 4 * math.sin((t + offset) / 3600)  # a slow daily drift
            series.append({
                "t": int(t + offset), "stage": planned["name"], "phase": phase, "users": users,
                "requests": requests, "failures": failures,
                "p50_ms": round(base * rng.uniform(0.9, 1.1), 3) if requests else None,
                "p95_ms": round(base * 3.2 * rng.uniform(0.85, 1.2), 3) if requests else None,
                "p99_ms": round(base * 6.0 * rng.uniform(0.8, 1.4), 3) if requests else None,
            })
        for phase, requests in counts.items():
            seconds = ramp_s if phase == "ramp" else planned["duration_s"] - ramp_s
            if seconds <= 0:
                continue
            phase_seconds[f"{index}/{phase}"] = seconds
            if requests:
                phases[f"{index}/{phase}"] = {
                    name: _scaled(shape, round(requests * share), failures_rate=0.002, rng=rng)
                    for name, (share, shape) in endpoints.items()
                }
                total_requests += requests
        t += planned["duration_s"]
        previous_users = planned["users"]
    output = {
        "started_at": start, "finished_at": t + 1, "stages": stages, "series": series, "phases": phases,
        "phase_seconds": phase_seconds, "created": {"escrow": total_requests // 16, "listing": total_requests // 80},
        "stopped": None, "breaches": [], "worker_count": plan.workers,
    }
    (run_dir / "locust_output.json").write_text(json.dumps(output))
    samples = []
    pids = {"master": 1001, "worker": (1002, 1003)}
    for second in range(int(start), int(t) + 1):
        samples.append({"t": second + 0.5, "role": "master", "pid": pids["master"],
                        "cpu_pct": round(rng.uniform(1, 4), 1), "rss_mib": 95.0})
        for pid in pids["worker"]:
            samples.append({"t": second + 0.5, "role": "worker", "pid": pid, "cpu_pct": round(rng.uniform(8, 16), 1),
                            "rss_mib": round(90 + 20 * (second - start) / max(1, t - start), 1)})
    (run_dir / "generator_samples.json").write_text(json.dumps(samples))
    return {"series": len(series), "samples": len(samples), "requests": total_requests}


def _endpoints(rng: random.Random) -> dict[str, tuple[float, LatencyHistogram]]:
    """20 endpoints: a share of the traffic each and a latency shape (lognormal around its own median)."""
    names = [f"{method} /{kind}{suffix}" for kind in ("escrows", "listings", "contacts", "documents", "tasks")
             for method, suffix in (("GET", ""), ("POST", ""), ("GET", "/{id}"), ("PATCH", "/{id}"))][:ENDPOINTS]
    weights = [rng.uniform(0.5, 5) for _ in names]
    total = sum(weights)
    shapes = {}
    for name, weight in zip(names, weights):
        median_ms = rng.uniform(4, 60)
        histogram = LatencyHistogram()
        for _ in range(SAMPLES_PER_ENDPOINT):
            histogram.record_ms(rng.lognormvariate(math.log(median_ms), 0.6))
        shapes[name] = (weight / total, histogram)
    return shapes


def _scaled(shape: LatencyHistogram, requests: int, *, failures_rate: float, rng: random.Random) -> dict:
    factor = requests / shape.total if shape.total else 0
    counts = {bucket: max(1, round(count * factor)) for bucket, count in shape.counts.items()}
    return {"histogram": counts, "failures": round(requests * failures_rate),
            "errors": {"HTTP 503 (expected 200)": round(requests * failures_rate)} if requests else {}}
