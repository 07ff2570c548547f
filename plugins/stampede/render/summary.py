"""A small, stable JSON summary of a run for scripts (``stampede run --summary-json FILE``).

results.json holds everything (series, histograms' figures, the GX document) and grows with the
run; a CI step that only wants "did it pass, and what broke" reads this instead. The schema is
documented in ``docs/ci.md``; like results.json, its keys are added, never renamed, and
``schema`` says which version a file follows.
"""

from __future__ import annotations

from typing import Any

from stampede.core.records import RunResult
from stampede.render.junit import check_message

__all__ = ["SCHEMA", "refused_summary", "summary"]

SCHEMA = "stampede-summary/1"


def summary(result: RunResult, *, exit_code: int, results_path: str | None = None) -> dict[str, Any]:
    """The summary document of a finished run (``exit_code``: the command's, see ``stampede.core.verdict.Exit``)."""
    failures = [f"{stage.name}: {check.name or check.metric}: {check_message(check)}"
                for stage, check in result.failed_checks()]
    if result.stopped is not None and not result.stopped.kind.invalidates:
        failures.append(f"stopped ({result.stopped.kind}): {result.stopped.reason}")
    return {
        "schema": SCHEMA,
        "run_id": result.run_id,
        "scenario": result.scenario,
        "target": result.target,
        "environment": result.environment,
        "verdict": result.verdict,
        "exit_code": int(exit_code),
        "passed": int(exit_code) == 0,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "stopped": None if result.stopped is None else {"kind": str(result.stopped.kind), "reason": result.stopped.reason},
        "failures": failures,
        "stages": [
            {"name": s.name, "outcome": s.outcome, "judged_on": s.judged_on, "users": s.users, "requests": s.requests,
             "rps": s.rps, "p95_ms": s.p95_ms, "p99_ms": s.p99_ms, "error_rate": s.error_rate}
            for s in result.stages
        ],
        "thresholds": [
            {"stage": s.name, "name": c.name or c.metric, "metric": c.metric, "stat": c.stat, "endpoint": c.endpoint,
             "source": c.source, "op": c.op, "limit": c.threshold, "value": c.value, "window_s": c.window_s,
             "outcome": c.outcome, "optional": c.optional, "reason": c.reason}
            for s in result.stages for c in s.checks
        ],
        "breaches": [
            {"stage": b.stage, "name": b.name or b.metric, "endpoint": b.endpoint, "value": b.value,
             "limit": b.threshold, "window_s": b.window_s, "at": b.at}
            for b in result.breaches
        ],
        "cleanup": {"left": result.cleanup.left, "clean": result.cleanup.clean},
        "generator_saturated": result.generator.saturated,
        "results": results_path,
        "report": result.report_path,
    }


def refused_summary(message: str, *, run_id: str, exit_code: int, verdict: str = "refused") -> dict[str, Any]:
    """The summary of a run that sent no load: refused (exit 2) or failed inside Stampede (exit 5)."""
    return {
        "schema": SCHEMA, "run_id": run_id, "scenario": None, "target": None, "environment": None,
        "verdict": verdict, "exit_code": int(exit_code), "passed": False, "started_at": None, "finished_at": None,
        "stopped": None, "failures": [message], "stages": [], "thresholds": [], "breaches": [],
        "cleanup": None, "generator_saturated": None, "results": None, "report": None,
    }
