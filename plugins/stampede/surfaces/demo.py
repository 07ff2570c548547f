"""``make demo``: the nightly DAG, once, against the bundled demo target, on embedded Airflow.

Starts the demo CRM on a free loopback port, runs ``airflow dags test
loadtest_nightly`` with the demo-sized scenario in the run conf (local
workers, SQLite Airflow from the Makefile's AIRFLOW_HOME), stops the target
and prints the verdict, the key figures per stage and where the files are.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stampede.infra.demo_target.server import DemoTarget
from stampede.core.paths import reports_root
from stampede.core.records import read_results

DEMO_SCENARIO = "demo"


_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(\w+)")
_PROGRESS = re.compile(r"(\[stampede\] stage=.*?)\s+\[stampede\.")


def _run_filtered(command: list[str], log_path: Path) -> int:
    """Run ``command``; keep its whole output in ``log_path``, show task starts, progress and errors."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log, subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as process:
        for line in process.stdout:  # type: ignore[union-attr]
            log.write(line)
            if match := _TASK_START.search(line):
                print(f"  task {match.group(1)}", flush=True)
            elif match := _PROGRESS.search(line):
                print(f"    {match.group(1)}", flush=True)
            elif "[error" in line or "Task failed" in line:
                print(f"  ! {line.strip()[:300]}", flush=True)
    return process.returncode


def main() -> int:
    started = time.time()
    os.environ.setdefault("STAMPEDE_TARGET_PASSWORD", os.environ.get("STAMPEDE_DEMO_PASSWORD", "LoadTest123!"))
    before = set(reports_root().glob("*/results.json"))
    with tempfile.TemporaryDirectory(prefix="stampede-demo-") as tmp, DemoTarget(workdir=Path(tmp)) as target:
        print(f"demo target: {target.base_url} (metrics: {target.metrics_url})", flush=True)
        conf = {"scenarios": [DEMO_SCENARIO], "environment": "local", "target": target.base_url}
        airflow = Path(sys.executable).with_name("airflow")
        print(f"running: airflow dags test loadtest_nightly -c '{json.dumps(conf)}'", flush=True)
        log_path = reports_root() / "demo-airflow.log"
        print(f"(the full Airflow log goes to {log_path}; task starts and load progress follow)", flush=True)
        returncode = _run_filtered([str(airflow), "dags", "test", "loadtest_nightly", "-c", json.dumps(conf)], log_path)
    new = sorted(set(reports_root().glob("*/results.json")) - before, key=lambda p: p.stat().st_mtime)
    if not new:
        print(f"demo: the DAG run wrote no results (airflow exit code {returncode}); see {log_path}", file=sys.stderr)
        return 1
    results_path = new[-1]
    result = read_results(results_path)
    print()
    print(f"verdict: {result.verdict.upper()}   scenario: {result.scenario}   run: {result.run_id}")
    print(f"{'stage':<12}{'users':>7}{'requests':>10}{'req/s':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'errors':>8}")
    for s in result.stages:
        fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
        print(f"{s.name:<12}{s.users:>7}{s.requests:>10}{s.rps:>8.1f}{fmt(s.p50_ms):>8}{fmt(s.p95_ms):>8}"
              f"{fmt(s.p99_ms):>8}{s.error_rate:>8.2%}")
    print(f"generator: max {result.generator.cpu_max_pct:.0f}% of a core, saturated: {result.generator.saturated}")
    print(f"cleanup: created {result.cleanup.created}, deleted {result.cleanup.deleted}, left {result.cleanup.left}")
    print(f"results: {results_path}")
    print(f"report:  {result.report_path}")
    slack = results_path.parent / "slack_messages.jsonl"
    if slack.exists():
        print(f"slack:   {slack} (no Slack connection configured, so messages were kept here)")
    print(f"demo finished in {time.time() - started:.0f} s")
    return 0 if result.verdict == "pass" and result.cleanup.left == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
