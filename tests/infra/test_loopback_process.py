"""A loopback server outlives no parent: a test run killed with SIGKILL leaves no target behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[2]

PARENT = """
import sys, time
from pathlib import Path
from infra.{module} import {cls}
target = {cls}({args}).__enter__()
print(target.pid, flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("module,cls,args", [
    ("fixed_latency_target", "FixedLatencyTarget", "5.0, Path(sys.argv[1])"),
    ("fast_crm_target", "FastCrmTarget", "workdir=Path(sys.argv[1])"),
], ids=["fixed-latency", "fast-crm"])
def test_the_target_exits_when_its_parent_is_killed(tmp_path, module, cls, args):
    code = PARENT.format(module=module, cls=cls, args=args)
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    server = None
    try:
        server = psutil.Process(int(parent.stdout.readline()))
        assert server.is_running() and server.ppid() == parent.pid
        parent.send_signal(signal.SIGKILL)  # no cleanup code runs in the parent
        parent.wait(10)
        deadline = time.time() + 10
        while server.is_running() and server.status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
            time.sleep(0.1)
        assert not server.is_running() or server.status() == psutil.STATUS_ZOMBIE, "the server outlived its parent"
    finally:
        parent.kill()
        if server is not None and server.is_running():
            server.kill()  # the failed case: leave nothing behind
