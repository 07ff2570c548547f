"""The bench's CPU meter: the same CPU-seconds a process reports for itself, over an exact window."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from stampede.surfaces.bench.meter import ProcessMeter, whole_seconds

BURN = """
import json, resource, time

def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime

time.sleep(1.0)
started, cpu_before = time.time(), cpu()
while cpu() - cpu_before < 0.6:  # 0.6 CPU-seconds, however long a shared machine makes that take
    pass
print(json.dumps({"from": started, "to": time.time(), "cpu": cpu() - cpu_before}), flush=True)
time.sleep(1.0)
"""


def test_the_meter_reads_the_cpu_a_process_used_and_finds_a_child_started_after_it() -> None:
    meter = ProcessMeter.tree(os.getpid())  # the child below does not exist yet
    try:
        process = subprocess.run([sys.executable, "-c", BURN], capture_output=True, text=True, timeout=30, check=True)
    finally:
        meter.stop()
    own = json.loads(process.stdout)
    burnt = meter.cpu_between(own["from"], own["to"])
    assert abs(burnt - own["cpu"]) < 0.12  # what the process counted itself, to about one 0.1 s sample
    whole = meter.cpu_between(own["from"] - 0.3, own["to"] + 0.3)  # the sleeps either side add next to nothing
    assert whole - burnt < 0.1


def test_whole_seconds_start_after_the_first_moment() -> None:
    assert whole_seconds(100.2, 15) == (101.0, 116.0)
    assert whole_seconds(time.time(), 1)[0] > time.time() - 1
