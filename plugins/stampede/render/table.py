"""The command line's summary of a run: what was left first, then the verdict and a table of stages."""

from __future__ import annotations

from pathlib import Path

from stampede.core import fmt
from stampede.core.records import RunResult


def summary_lines(result: RunResult, run_dir: Path) -> list[str]:
    lines = [""]
    cleanup = result.cleanup
    if not cleanup.clean:
        left = "an unknown number of" if cleanup.left is None else fmt.count(cleanup.left)
        lines.append(f"CLEANUP INCOMPLETE: {left} test entities may be left on the target"
                     + (f" ({cleanup.error})" if cleanup.error else ""))
    verdict = result.verdict.upper()
    stopped = f" (stopped: {result.stopped.reason})" if result.stopped else ""
    lines.append(f"verdict: {verdict}{stopped}" + ("" if cleanup.clean else " — but test data was left (see above)"))
    lines.append(f"{'stage':<22}{'users':>7}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>9}  result")
    for s in result.stages:
        lines.append(
            f"{s.name:<22}{s.users:>7}{fmt.num(s.rps):>9}{fmt.ms(s.p50_ms, unit=False):>9}"
            f"{fmt.ms(s.p95_ms, unit=False):>9}{fmt.ms(s.p99_ms, unit=False):>9}{fmt.pct(s.error_rate):>9}  {s.outcome}"
        )
        for check in s.failed_checks():
            subject = f"{check.endpoint}: " if check.endpoint else ""
            text = (subject + fmt.check_text(check.metric, check.op, check.threshold, check.value) if check.judged
                    else f"{check.name}: not judged ({check.reason})")
            lines.append(f"{'':<4}{text}")
    g = result.generator
    lines.append(f"generator: max {g.cpu_max_pct:.0f}% of a core, {g.memory_max_mib:.0f} MiB"
                 + (" — SATURATED" if g.saturated else ""))
    if g.advice:
        lines.append(f"generator: {g.advice}")
    left = "unknown" if cleanup.left is None else fmt.count(cleanup.left)
    lines.append(f"cleanup: created {fmt.count(cleanup.created)}, deleted {fmt.count(cleanup.deleted)}, left {left}")
    lines.append(f"results: {run_dir / 'results.json'}")
    lines.append(f"report:  {run_dir / 'report.html'}")
    return lines
