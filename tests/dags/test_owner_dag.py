"""The Airflow task that owns the load is SIGKILLed mid-run (``dag.test()`` in its own process): the load ends
by itself within the plan's grace, counted at the target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from stampede.infra.canary import Canary
from stampede.safety import lease
from stampede.plan.scenario import DEFAULT_OWNER_GRACE_S

pytestmark = pytest.mark.integration

DAG_PROCESS = Path(__file__).with_name("dag_test_process.py")


def _load_times(canary: Canary) -> list[float]:
    with canary._lock:
        return sorted(h.t for h in canary.requests if not h.path.endswith(("/health", "/metrics")))


def test_a_sigkilled_load_task_leaves_no_load_running(airflow_db, tmp_path, record_property):
    with Canary() as canary:
        conf = {"scenario": "smoke", "environment": "local", "target": canary.base_url, "workers": 0,
                "duration_s": 60}
        with open(tmp_path / "dag.log", "wb") as log:
            process = subprocess.Popen([sys.executable, str(DAG_PROCESS), "loadtest_manual", json.dumps(conf)],
                                       stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.time() + 180
            while len(_load_times(canary)) < 30:
                assert process.poll() is None, (tmp_path / "dag.log").read_text()[-3000:]
                assert time.time() < deadline, "no load arrived"
                time.sleep(0.2)
            masters = [p for p in psutil.Process(process.pid).children(recursive=True)
                       if "locust" in " ".join(p.cmdline())]
            killed_at = time.time()
            os.kill(process.pid, signal.SIGKILL)  # the task's process, with no chance to clean up
            process.wait(10)
            while time.time() - killed_at < 40:
                times = _load_times(canary)
                if time.time() - max(times[-1], killed_at) > 3.0:
                    break
                time.sleep(0.2)
            latency = _load_times(canary)[-1] - killed_at
            time.sleep(2.0)
            left = [p.pid for p in masters if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            # nobody ran the killed run's teardown: its lease (no pid: a DAG run's) holds the target until it
            # expires, or until an operator gives it back, as the next test of this port would need
            target = canary.base_url
            held = lease.holder(target)
            released = subprocess.run([sys.executable, "-m", "stampede.surfaces.cli", "lease", "release",
                                       held["run_id"]], capture_output=True, text=True, timeout=60) if held else None
        finally:
            for p in psutil.Process().children(recursive=True):
                if "locust" in " ".join(p.cmdline()):
                    p.kill()
    record_property("airflow_task_sigkill_last_request_s", round(latency, 2))
    print(f"dag.test() SIGKILLed: last load request {latency:.2f} s after (grace {DEFAULT_OWNER_GRACE_S:g} s); "
          f"{len(masters)} Locust processes, left {left}")
    assert masters, "no Locust master was found under the task"
    assert held is not None and held["pid"] is None, f"the killed run's lease was not held: {held}"
    assert released.returncode == 0, released.stdout + released.stderr
    assert lease.holder(target) is None, "stampede lease release left the lease held"
    assert latency - DEFAULT_OWNER_GRACE_S < 5.0
    assert left == []
