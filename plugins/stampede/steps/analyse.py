"""Step 6, analyse: the target's own metrics, bottlenecks, the baseline comparison, the trend, recommendations.

Reads the run's results and raw output, records the run in the history and
writes ``server``, ``bottlenecks``, ``drift``, ``comparison``, ``trend`` and
``recommendations`` into results.json. Drift (``stampede.analysis.drift``) is a warning: it
never changes the verdict. Idempotent by run id: the run is upserted
into the history and every key it writes is recomputed. A history that cannot be
reached leaves the comparison ``unavailable`` (and says so); it never fails the run.
"""

from __future__ import annotations

import logging

from sqlalchemy.exc import SQLAlchemyError

from stampede.analysis.bottlenecks import find_bottlenecks
from stampede.analysis.comparison import compare, judged_histograms, trend
from stampede.analysis.drift import find_drift
from stampede.analysis.recommendations import recommend
from stampede.core.paths import Artifact
from stampede.core.records import Comparison, RunResult, collector_paused
from stampede.figures.server import summarise
from stampede.plan.run_plan import RunPlan
from stampede.state.history import RunStore
from stampede.steps.folder import folder_of

log = logging.getLogger(__name__)


@collector_paused()  # a day held in memory: its million objects are not scanned again and again
def analyse(plan: RunPlan, *, store: RunStore | None = None) -> RunResult:
    folder = folder_of(plan)
    result = folder.results()
    output = folder.read_json(Artifact.LOCUST_OUTPUT, default={}, keys=("stages", "intervals", "phases"))
    document = folder.read_json(Artifact.SERVER_METRICS)
    result.server = summarise(document, output.get("stages") or [])
    result.bottlenecks = find_bottlenecks(result, document)
    result.drift = find_drift(result.stages, output.get("stages") or [], intervals=output.get("intervals"),
                              series=result.series, server_document=document)
    for finding in result.drift.findings:
        log.warning("Drift in %s: %s", finding.stage, finding.title)
    histograms = judged_histograms(output) if output else {}
    own_store = store is None
    store = store or RunStore()
    try:
        store.record(result, histograms)
        baseline, why = store.baseline_for(result)
        result.comparison = compare(result, histograms, baseline, why=why)
        result.trend = trend(store.recent(result.scenario, result.target, until=result.started_at))
    except SQLAlchemyError as exc:  # history down: the report still goes out, saying so
        log.warning("Run history unavailable (%s): no baseline comparison", type(exc).__name__)
        result.comparison = Comparison(verdict="unavailable", why=f"history unavailable: {type(exc).__name__}")
    finally:
        if own_store:
            store.close()
    result.recommendations = recommend(result)
    if result.comparison and result.comparison.regressions:
        log.warning("Regressions against baseline %s: %s", result.comparison.baseline_run_id,
                    "; ".join(f"{r.stage} {r.endpoint}" for r in result.comparison.regressions))
    folder.write_results(result)
    return result
