"""Airflow Assets: each run tells downstream DAGs how each of its scenarios went, per environment.

The report task (written once, after cleanup and teardown, so its figures are final) emits one Asset event
per scenario of the run through the alias :data:`RESULTS_ALIAS`: the asset
``stampede.results.<environment>.<scenario>`` (:func:`results_asset`; names known only at run time, so an
alias, which creates the asset on first use). The event's extra (:func:`results_extra`) carries the
verdict, the key figures and the report's address, so a release gate scheduled on the asset (or on the
alias, for every environment and scenario) decides from the extra alone; see
``dags/example_release_gate.py``.

Measured under Airflow 3.3.2: one event added through the alias queued both a DAG scheduled on the alias
and a DAG scheduled on ``Asset(name=..., uri=...)`` with the same name and URI.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import Asset, AssetAlias

from stampede.core.records import RunResult, StageResult
from stampede.core.verdict import verdict_of
from stampede.render.outcome import cleanup_problem

__all__ = ["RESULTS_ALIAS", "results_asset", "results_events", "results_extra"]

RESULTS_ALIAS = AssetAlias("stampede.results")


def results_asset(environment: str, scenario: str) -> Asset:
    """The asset of one scenario's results in one environment (the same name and URI wherever it is made)."""
    return Asset(name=f"stampede.results.{environment}.{scenario}", uri=f"stampede://results/{environment}/{scenario}",
                 group="stampede")


def _worst(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def results_extra(result: RunResult, scenario: str, *, report_url: str | None, dag_id: str | None) -> dict[str, Any]:
    """The event's extra for one scenario of the run (JSON): its verdict, its figures, the report."""
    stages: list[StageResult] = [s for s in result.stages if s.scenario == scenario]
    judged = [s for s in stages if s.judged]
    verdict = verdict_of(judged=[s.passed for s in judged], stop=result.stopped.kind if result.stopped else None,
                         saturated=result.generator.saturated)
    return {
        "environment": result.environment,
        "scenario": scenario,
        "verdict": verdict,
        "run_verdict": result.verdict,
        "passed": verdict == "pass" and cleanup_problem(result.cleanup) is None,
        "dag_id": dag_id,
        "run_id": result.run_id,
        "target": result.target,
        "started_at": result.started_at,
        "finished_at": result.finished_at,
        "peak_users": max((s.users for s in stages), default=0),
        "p95_ms": _worst([s.p95_ms for s in judged]),
        "p99_ms": _worst([s.p99_ms for s in judged]),
        "error_rate": _worst([s.error_rate for s in judged]),
        "rps": _worst([s.rps for s in judged]),
        "stages": [{"name": s.name, "outcome": s.outcome, "users": s.users, "rps": s.rps, "p95_ms": s.p95_ms,
                    "p99_ms": s.p99_ms, "error_rate": s.error_rate} for s in stages],
        "cleanup_left": result.cleanup.left,
        "aborted": result.aborted,
        "report_url": report_url,
    }


def results_events(result: RunResult, *, report_url: str | None, dag_id: str | None) -> list[tuple[Asset, dict]]:
    """One (asset, extra) per scenario of the run, in the run's order."""
    scenarios = list(dict.fromkeys(s.scenario for s in result.stages)) or [result.scenario]
    return [(results_asset(result.environment, name), results_extra(result, name, report_url=report_url, dag_id=dag_id))
            for name in scenarios]
