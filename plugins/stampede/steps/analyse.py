"""Analyse a validated run: server metrics, bottlenecks, history, baseline comparison, recommendations.

Called by ``pipeline.report`` before the HTML is rendered, so the DAG's wiring
does not change. Idempotent by run id: the run is upserted into the history and
every key it writes is recomputed from the run folder.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from sqlalchemy.exc import SQLAlchemyError

from stampede.figures import server as server_metrics
from stampede.analysis.bottlenecks import find_bottlenecks
from stampede.state.history import RunStore, compare, judged_histograms, trend
from stampede.analysis.recommendations import recommend
from stampede.core.records import RunResult

__all__ = ["analyse"]

log = logging.getLogger(__name__)


def analyse(result: RunResult, run_dir: Path, *, store: RunStore | None = None) -> RunResult:
    """Fill ``server``, ``bottlenecks``, ``comparison``, ``trend`` and ``recommendations`` of ``result``."""
    run_dir = Path(run_dir)
    output_path = run_dir / "locust_output.json"
    output = json.loads(output_path.read_text()) if output_path.exists() else {}
    document = server_metrics.load(run_dir)
    result.server = server_metrics.summarise(document, output.get("stages") or [])
    data = result.to_dict()
    result.bottlenecks = find_bottlenecks(data, document)
    histograms = judged_histograms(output) if output else {}
    own_store = store is None
    store = store or RunStore()
    try:
        store.record(data, histograms)
        baseline, why = store.baseline_for(data)
        result.comparison = compare(data, histograms, baseline, why=why)
        result.trend = trend(store.recent(result.scenario, result.target, until=result.started_at))
    except SQLAlchemyError as exc:  # history down: the report still goes out, saying so
        log.warning("Run history unavailable (%s): no baseline comparison", type(exc).__name__)
        result.comparison = {"verdict": "unavailable", "why": f"history unavailable: {type(exc).__name__}",
                             "stages": [], "regressions": []}
    finally:
        if own_store:
            store.close()
    raw = json.loads((run_dir / "results.json").read_text()) if (run_dir / "results.json").exists() else {}
    result.recommendations = recommend({**raw, **result.to_dict()}, result.bottlenecks, result.server)
    if result.comparison.get("regressions"):
        log.warning("Regressions against baseline %s: %s", result.comparison.get("baseline_run_id"),
                    "; ".join(f"{r['stage']} {r['endpoint']}" for r in result.comparison["regressions"]))
    return result


def publish(result: RunResult, run_dir: Path, *, report_url: str | None, store: RunStore | None = None) -> str | None:
    """Copy the report files to S3 when ``STAMPEDE_REPORTS_S3_URI`` is set; remember where the report is."""
    from stampede.state.history import publish_to_s3

    from botocore.exceptions import BotoCoreError, ClientError

    try:
        uri = publish_to_s3(run_dir, result.run_tag or result.run_id) or report_url
    except (BotoCoreError, ClientError, OSError, ValueError) as exc:  # an S3 outage must not lose the local report
        log.warning("Report files not copied to S3: %s: %s", type(exc).__name__, exc)
        uri = report_url
    if uri:
        own_store = store is None
        store = store or RunStore()
        try:
            store.set_report_uri(result.run_id, uri)
        except SQLAlchemyError as exc:
            log.warning("Run history unavailable (%s): report link not recorded", type(exc).__name__)
        finally:
            if own_store:
                store.close()
    return uri
