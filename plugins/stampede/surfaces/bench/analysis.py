"""analysis_s_24h: analyse and report a synthetic 24-hour endurance history, with a slow leak planted in it.

The history is what the Locust master and the sampler would have written for
the endurance scenario (1,000 users, ramp, 24 h soak, ramp-down): a 1-second
series, per-stage/phase histograms of 20 endpoints with realistic (lognormal,
per-endpoint) latencies, the soak's hourly per-endpoint histograms (``intervals``),
1-second CPU/memory samples of a master and two workers, and the target's own
metrics every 2 s (``server_metrics.json``: memory, pool in use, CPU). From hour
:data:`LEAK_FROM_HOUR` of the soak a slow leak creeps in: every latency
:data:`LEAK_PER_HOUR` higher each hour and the target's memory :data:`LEAK_MIB_PER_HOUR`
MiB more each hour. The validate, analyse and report steps then run on it, each in a
fresh process as its Airflow task runs it, timed from its start (imports included) with
its peak memory. The figure is the day's analysis: the analyse and report steps (the
report's charts included), summed; validate (the Great Expectations verdict, its import
alone ~2.5 s) is measured and printed beside it. The figures also record the report's size
and whether the drift analysis named the leak with its start hour (``leak_found``).
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

import numpy as np

from stampede.core.histogram import COARSE_SUB_BUCKETS, LatencyHistogram
from stampede.core.thresholds import drift_interval_s
from stampede.surfaces.bench.figures import GOALS, Figure
from stampede.plan.run_plan import RunPlan
from stampede.plan.scenario import load_scenario

SCENARIO = "endurance"
ENDPOINTS = 20
USERS_RPS_PER_USER = 1 / 5.5
SAMPLES_PER_ENDPOINT = 20_000  # drawn, then scaled to the endpoint's request count (same shape)
LEAK_FROM_HOUR = int(GOALS["drift_leak_start_hour"][1])  # of the soak: the hour the planted leak starts
LEAK_PER_HOUR = 0.03  # every latency 3 % higher for each hour since (+24 % by the end of the day)
LEAK_MIB_PER_HOUR = 8.0
SERVER_INTERVAL_S = 2.0  # as the sampler scrapes

STEPS = ("validate", "analyse", "report")  # each its own Airflow task: one fresh process each, as there
ANALYSIS_STEPS = ("analyse", "report")  # the day's analysis and its report (charts included): analysis_s_24h

# One step in a fresh process, timed from its start (imports included); the step module alone is imported,
# as the Airflow task does (stampede.surfaces.airflow_tasks imports it inside the task).
_TIMED = """
import importlib, json, resource, sys, time
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
started = time.time()
from stampede.plan.run_plan import RunPlan
step = getattr(importlib.import_module(f"stampede.steps.{sys.argv[1]}"), sys.argv[1])
plan = RunPlan.from_dict(json.loads(open(sys.argv[2]).read()))
imported, imported_cpu = time.time(), cpu()
outcome = step(plan)
done = time.time()
print(json.dumps({"wall_s": done - started, "import_s": imported - started, "cpu_s": cpu(), "import_cpu_s": imported_cpu,
                  "verdict": getattr(outcome, "verdict", None),
                  "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def analysis_24h(workdir: Path, *, quick: bool = False) -> list[Figure]:
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
    steps = {step: _timed_step(step, plan_file, env) for step in STEPS}
    analysis = [steps[step] for step in ANALYSIS_STEPS]
    elapsed = sum(t["wall_s"] for t in analysis)
    cpu_s = sum(t["cpu_s"] for t in analysis)
    peak_mib = max(t["max_rss_mib"] for t in analysis)
    findings = [{k: f[k] for k in ("kind", "subject", "metric", "start_hour", "title")}
                for f in (json.loads((run_dir / "results.json").read_text()).get("drift") or {}).get("findings", [])]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    report = run_dir / "report.html"
    report_bytes = report.stat().st_size if report.exists() else None
    charts_bytes = sum(p.stat().st_size for p in (run_dir / "charts").glob("*")) if (run_dir / "charts").exists() else 0
    leak_hour = LEAK_FROM_HOUR if hours > LEAK_FROM_HOUR else None
    latency = [f for f in findings if f["kind"] == "latency" and f["subject"] == "all requests"]
    memory = [f for f in findings if f["kind"] == "server" and f["subject"] == "memory_mib"]
    leak_found = (bool(latency) and bool(memory) and latency[0]["start_hour"] == leak_hour
                  and memory[0]["start_hour"] == leak_hour) if leak_hour is not None else not findings
    print(f"  synthetic {hours} h history ({sizes['series']:,} seconds, {sizes['samples']:,} generator samples, "
          f"{sizes['server_points']:,} server points, {sizes['requests']:,} requests; written in {made_s:.0f} s)", flush=True)
    for step, t in steps.items():
        print(f"  {step}: {t['wall_s']:.1f} s wall, {t['cpu_s']:.1f} s of CPU (imports {t['import_s']:.1f} s wall, "
              f"{t['import_cpu_s']:.1f} s of CPU), peak RSS {t['max_rss_mib']:.0f} MiB", flush=True)
    print(f"  analyse + report (analysis_s_24h): {elapsed:.1f} s wall, {cpu_s:.1f} s of CPU; validate before them "
          f"{steps['validate']['wall_s']:.1f} s; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores",
          flush=True)
    print(f"  report.html {report_bytes or 0:,} bytes (charts/ {charts_bytes:,} bytes more)", flush=True)
    planted = f"a leak planted from hour {leak_hour}" if leak_hour is not None else "no leak planted (too short)"
    verdict = ("named with its start hour" if leak_found else "NOT NAMED with its start hour") if leak_hour is not None \
        else ("nothing found, as it should" if leak_found else "FINDINGS on a day without a leak")
    print(f"  drift ({planted}): {verdict}; "
          + ("; ".join(f"{f['title']}" for f in findings) or "no findings"), flush=True)
    measured_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    details = {
        "wall_s": round(elapsed, 2), "cpu_s": round(cpu_s, 2), "verdict": steps["validate"]["verdict"],
        "steps": {step: {k: round(v, 2) if isinstance(v, float) else v for k, v in t.items() if k != "verdict"}
                  for step, t in steps.items()},
        "hours": hours, "endpoints": ENDPOINTS, **sizes,
        "report_bytes": report_bytes, "charts_bytes": charts_bytes,
        "leak_from_hour": leak_hour, "leak_found": leak_found,
        "drift_findings": [f"{f['kind']} {f['subject']} {f['metric']} from hour {f['start_hour']}" for f in findings],
        "children_max_rss_mib": round(children.ru_maxrss / 1024, 1),
        "load_average": round(os.getloadavg()[0], 2),
        "how": "the analyse and report steps (report.html and charts/), each in a fresh process as its Airflow task "
               "runs it (imports included), after the validate step in its own, on a synthetic endurance history at "
               f"1-second resolution, a slow leak planted from hour {LEAK_FROM_HOUR} of the soak",
    }
    named = [f["start_hour"] for f in latency[:1] + memory[:1]]
    return [
        Figure(name="analysis_s_24h", value=round(elapsed, 1), measured_at=measured_at, details=details),
        Figure(name="analysis_peak_mib_24h", value=round(peak_mib, 1), measured_at=measured_at,
               details={"validate_mib": round(steps["validate"]["max_rss_mib"], 1),
                        "how": "the higher peak RSS of the analyse and report processes (ru_maxrss)"}),
        Figure(name="analysis_report_mib_24h", value=round((report_bytes or 0) / 2**20, 2) if report_bytes else None,
               measured_at=measured_at, details={"bytes": report_bytes, "charts_bytes": charts_bytes,
                                                 "how": "report.html of that day (charts inline as SVG, at most "
                                                        "2,000 points a line); charts/ holds the PNGs besides"}),
        Figure(name="drift_leak_start_hour",
               value=float(named[0]) if leak_found and named else None, measured_at=measured_at,
               details={"planted_from_hour": leak_hour, "named": findings and [f["title"] for f in findings[:3]],
                        "how": "the hour the drift analysis names for the latency of all requests and the target's "
                               "memory (both must name it); none when either is missing or names another hour"}),
    ]


def _timed_step(step: str, plan_file: Path, env: dict[str, str]) -> dict:
    """Run one pipeline step in a fresh process; its timings (see ``_TIMED``)."""
    completed = subprocess.run([sys.executable, "-c", _TIMED, step, str(plan_file)],
                               capture_output=True, text=True, env=env, timeout=600, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{step} failed on the synthetic history: {completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def synthesise(plan: RunPlan, run_dir: Path, *, rng: random.Random) -> dict[str, int]:
    """Write ``locust_output.json``, ``generator_samples.json`` and ``server_metrics.json`` as a real endurance
    run would leave them, with the leak of the module docstring planted in the soak."""
    start = float(int(time.time()) - plan.load_duration_s - 60)
    stages, series, phases, phase_seconds, intervals = [], [], {}, {}, {}
    soak_start = None
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
        width = drift_interval_s(planned["duration_s"])
        per_interval: dict[int, int] = {}
        if planned["name"] == "soak":
            soak_start = t
        for offset in range(planned["duration_s"]):
            phase = "ramp" if offset < ramp_s else "steady"
            if ramp_s:
                users = round(previous_users + (planned["users"] - previous_users) * min(1.0, offset / ramp_s))
            else:
                users = planned["users"] if phase == "steady" and planned["users"] else max(0, round(previous_users * (1 - offset / max(1, planned["duration_s"]))))
            requests = max(0, round(rng.gauss(users * USERS_RPS_PER_USER, math.sqrt(users * USERS_RPS_PER_USER + 1))))
            failures = 1 if requests and rng.random() < 0.002 else 0
            counts[phase] += requests
            if width:
                per_interval[offset // width] = per_interval.get(offset // width, 0) + requests
            base = 18 + 4 * math.sin((t + offset) / 3600)  # a slow swing, up and down every six hours
            if planned["name"] == "soak":
                base *= _creep(offset / 3600)
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
        if width:
            intervals[str(index)] = {"interval_s": width, "start": t, "bins": {
                str(n): {"first": int(t) + n * width, "last": int(t) + min(planned["duration_s"], (n + 1) * width) - 1,
                         "endpoints": {name: _interval(shape, round(sent * share), 0.002,
                                                       _creep((n + 0.5) * width / 3600) if planned["name"] == "soak" else 1.0)
                                       for name, (share, shape) in endpoints.items()}}
                for n, sent in sorted(per_interval.items())}}
        t += planned["duration_s"]
        previous_users = planned["users"]
    output = {
        "started_at": start, "finished_at": t + 1, "stages": stages, "series": series, "phases": phases,
        "phase_seconds": phase_seconds, "created": {"escrow": total_requests // 16, "listing": total_requests // 80},
        "stopped": None, "breaches": [], "worker_count": plan.workers, "intervals": intervals,
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
    server = _server_metrics(start, t, soak_start if soak_start is not None else start, rng)
    (run_dir / "server_metrics.json").write_text(json.dumps(server))
    return {"series": len(series), "samples": len(samples), "requests": total_requests,
            "server_points": sum(len(e["points"]) for e in server["series"].values())}


def _creep(hours_into_soak: float) -> float:
    """The planted leak: every latency this much slower, ``hours_into_soak`` into the soak."""
    return 1 + LEAK_PER_HOUR * max(0.0, hours_into_soak - LEAK_FROM_HOUR)


def _interval(shape: LatencyHistogram, requests: int, failures_rate: float, slower: float) -> dict:
    """One endpoint's interval as the master bins it: its shape scaled to ``requests``, every latency
    ``slower`` times longer, in coarse buckets (``stampede.core.histogram.coarse_bucket``)."""
    buckets = np.fromiter(shape.counts, dtype=np.int64, count=len(shape.counts))
    counts = np.fromiter(shape.counts.values(), dtype=np.float64, count=len(shape.counts))
    values = np.maximum(1, (buckets * slower).astype(np.int64))
    _, exponent = np.frexp(values.astype(np.float64))  # bit lengths, exactly (values < 2**53)
    widths = np.left_shift(np.int64(1), np.maximum(0, exponent - COARSE_SUB_BUCKETS.bit_length()).astype(np.int64))
    keys, inverse = np.unique(values - values % widths, return_inverse=True)
    scaled = np.maximum(1, np.round(np.bincount(inverse, weights=counts) * requests / max(1, shape.total)))
    return {"histogram": {int(k): int(c) for k, c in zip(keys, scaled)}, "failures": round(requests * failures_rate)}


def _server_metrics(start: float, end: float, soak_start: float, rng: random.Random) -> dict:
    """The target's own metrics every 2 s, as the sampler writes them: memory (a swing from the soak's start, so a run is like the last, noise and, from hour
    ``LEAK_FROM_HOUR`` of the soak, the leak, which never falls back), the pool in use (flat) and CPU."""
    memory, in_use, size, cpu = [], [], [], []
    now = start
    while now <= end:
        hours = (now - soak_start) / 3600
        leak = LEAK_MIB_PER_HOUR * max(0.0, hours - LEAK_FROM_HOUR)
        memory.append([round(now, 3), round(300 + 10 * math.sin((now - soak_start) / 3600) + rng.gauss(0, 3) + leak, 2)])
        in_use.append([round(now, 3), float(max(0, 20 + rng.randint(-3, 3)))])
        size.append([round(now, 3), 40.0])
        cpu.append([round(now, 3), round(max(0.0, rng.gauss(35, 5)), 2)])
        now += SERVER_INTERVAL_S
    series = {"cpu_pct": ("cpu", "% of a core", None, cpu), "memory_mib": ("memory", "MiB", None, memory),
              "db_pool_size": ("pool_size", "connections", None, size),
              "db_pool_in_use": ("pool_in_use", "connections", 40, in_use)}
    return {"source": "prometheus", "url": "http://127.0.0.1:9/metrics", "interval_s": SERVER_INTERVAL_S,
            "started_at": start, "ended_at": end,
            "series": {name: {"role": role, "unit": unit, "limit": limit, "points": points}
                       for name, (role, unit, limit, points) in series.items()},
            "errors": [], "error_count": 0}


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
