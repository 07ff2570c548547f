"""The master's memory does not grow with the run's length: every per-second structure keeps the recent seconds only.

A real ``RunAggregator`` (with its figure stream, rolling windows and the open model's counts) is fed
20,000 synthetic seconds of one long stage, a second at a time, as workers would report them. What it
retains is measured twice, after 4,000 and after 20,000 seconds: the sizes of its per-second structures
and, with ``tracemalloc``, the bytes it holds. Both must stay flat, and the final output must still
hold every second exactly: the stage's merged histogram, the open model's counts, the whole series and
the users of seconds the master forgot long ago (read back from the stream).
"""

from __future__ import annotations

import json
import subprocess
import sys

_FEED = r"""
import gc, json, sys, tempfile, time, tracemalloc, types
from pathlib import Path
from stampede.core.histogram import LatencyHistogram
from stampede.figures import stream as figure_stream
from stampede.load.intervals import IntervalBins
from stampede.load.plugin import RunAggregator

folder = Path(sys.argv[1])
runner = types.SimpleNamespace(user_count=4, state="running")
env = types.SimpleNamespace(runner=runner, parsed_options=types.SimpleNamespace(
    stampede_out=str(folder / "locust_output.json"), stampede_stop_file="", stampede_ledger=""))
SECONDS = 20_000
plan = {"model": "open", "checkpoint_interval_s": 10, "progress_interval_s": 1e9, "stages": [
    {"name": "soak", "users": 4, "spawn_rate": 4, "duration_s": SECONDS, "rate": 10,
     "threshold_table": [{"stat": "p95", "op": "<", "limit": 500, "window_s": 5}]}]}
agg = RunAggregator(env, plan)
T0 = int(time.time()) - SECONDS - 100  # a synthetic clock that ends before the real one (write() reads it)
agg.enter_stage(0, T0 + 0.1)
sent = {"requests": 0, "started": 0}
shapes = []
for i in range(7):  # a few latency shapes, so seconds differ (a real day's seconds do)
    h = LatencyHistogram()
    for k in range(10 + i):
        h.record_ms(3.0 + 1.7 * k * (i + 1))
    shapes.append(h.to_dict())

def feed(sec):
    counts = shapes[sec % len(shapes)]
    agg.add_report({"seconds": {str(sec): {"GET /x": [counts, sec % 3 == 0, {"HTTP 500": 1} if sec % 3 == 0 else {}]}},
                    "iterations": {str(sec): [10, sec % 2]}})
    sent["requests"] += sum(counts.values())
    sent["started"] += 10

def sizes():
    return {"timeline": len(agg.timeline), "iterations": len(agg.iterations.per_second),
            "open": len(agg.open_seconds), "closed": len(agg.closed_seconds), "series": len(agg.series),
            "unstreamed": len(agg.unstreamed), "pending": len(agg.pending), "watch": len(agg.watch.seconds),
            "windows": sum(len(w.held) for w in agg.watch.windows.values()), "tags": len(agg.tags),
            "interval_bins": sum(len(bins) for bins in agg.intervals.bins.values())}

tracemalloc.start()
measured = {}
for offset in range(1, SECONDS):
    sec = T0 + offset
    if offset >= 3:
        feed(sec - 3)  # reports arrive about 3 s late, as workers send them
    agg.tick(sec + 0.01)
    if offset in (4_000, SECONDS - 1):
        gc.collect()
        measured[offset] = {"sizes": sizes(), "bytes": tracemalloc.get_traced_memory()[0]}
tracemalloc.stop()
agg.end_load(T0 + SECONDS + 0.01)
for offset in range(SECONDS - 3, SECONDS):
    feed(T0 + offset)
agg.tick(T0 + SECONDS + 1)
agg.write(str(folder / "locust_output.json"))
out = json.loads((folder / "locust_output.json").read_text())
phases = [eps["GET /x"] for eps in out["phases"].values()]
rows = {row["t"]: row for row in out["series"]}
checkpoints, _torn = figure_stream.read_stream(folder / "stream")
rebuilt = json.loads(json.dumps(figure_stream.rebuild_output(checkpoints)))
same = {key: rebuilt[key] == out[key] for key in ("phases", "phase_seconds", "series", "iterations", "stages", "windows")}
held = IntervalBins(out["stages"])  # the drift bins as a master that streamed none would hold them
for offset in range(SECONDS):
    sec = T0 + offset
    held.add(0, sec, "GET /x", shapes[sec % len(shapes)], sec % 3 == 0)
same["intervals"] = json.loads(json.dumps(held.to_dict())) == out["intervals"]
print(json.dumps({"measured": measured, "sent": sent, "merged": sum(sum(p["histogram"].values()) for p in phases),
                  "started": sum(v[0] for v in out["iterations"].values()), "series": len(out["series"]),
                  "early_users": rows[T0 + 10]["users"], "early_stage": rows[T0 + 10]["stage"],
                  "seconds": out["phase_seconds"], "same_as_stream": same,
                  "interval_bins": len(out["intervals"]["0"]["bins"])}))
"""


def test_a_long_run_keeps_a_flat_memory_and_exact_figures(tmp_path):
    completed = subprocess.run([sys.executable, "-c", _FEED, str(tmp_path)], capture_output=True, text=True,
                               timeout=240, check=False)
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(completed.stdout.strip().splitlines()[-1])
    early, late = found["measured"]["4000"], found["measured"]["19999"]
    for name, size in late["sizes"].items():  # five times the run, the same few seconds held
        assert size <= max(early["sizes"][name], 1) + 10, (name, early["sizes"], late["sizes"])
    assert late["sizes"]["timeline"] <= 1_000 and late["sizes"]["iterations"] <= 200
    # the drift bins (13 of 1,620 s here): the finished ones are on disk, the master holds the current one
    assert early["sizes"]["interval_bins"] <= 2 and late["sizes"]["interval_bins"] <= 2, (early, late)
    assert found["interval_bins"] == 13
    grown = late["bytes"] - early["bytes"]
    # 16,000 more seconds: a leak of one small dict entry a second would be ~1.5 MiB; the drift bins add a few KiB
    assert grown < 256 * 1024, f"the master's memory grew {grown / 1024:.0f} KiB over 16,000 seconds"
    # and nothing was lost by forgetting: every second is in the figures, exactly
    assert found["merged"] == found["sent"]["requests"]
    assert found["started"] == found["sent"]["started"]
    assert found["series"] >= 19_999
    assert found["early_users"] == 4 and found["early_stage"] == "soak"  # a tag forgotten long ago, read back
    # the master's own output and the one rebuilt from its stream (what a crash leaves) still agree exactly,
    # and its drift bins, read back from the stream, equal those of a master that held them all
    assert all(found["same_as_stream"].values()), found["same_as_stream"]


def test_the_rss_slope_finds_a_planted_leak_and_not_a_flat_process():
    """The bench's measure on itself: real processes, one leaking on purpose, sampled from outside with psutil."""
    from stampede.surfaces.bench.memory import planted_leak_check

    planted = 1200.0  # 4 MiB in the 12 s: ten times the bench's, so a shared machine's noise cannot hide it
    found = planted_leak_check(12.0, planted)
    assert found["leak_detected"], found
    assert abs(found["found_mib_per_h"] - planted) <= planted / 2, found
    assert abs(found["flat_mib_per_h"]) < planted / 10, found
