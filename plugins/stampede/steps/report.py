"""Step 9, report: the HTML report and the final results.json, written once, after cleanup and teardown.

By now every figure is known: the stages, the analysis, what cleanup deleted and
left, and the actual cost. The report renders them (``report.html`` and
``charts/``), results.json gets ``report_path`` and ``cost``, and, when
``STAMPEDE_REPORTS_S3_URI`` is set, the run's files are copied to S3 and the
report's address is recorded in the history. A run that never produced results
(refused, or its load step failed) has no report.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.exc import SQLAlchemyError

from stampede.core.artifacts import RunFolder
from stampede.core.paths import Artifact
from stampede.core.records import CostRecord, collector_paused, from_dict
from stampede.plan.run_plan import RunPlan
from stampede.render.report import render_report
from stampede.state.history import RunStore, publish_to_s3
from stampede.steps.folder import folder_of

log = logging.getLogger(__name__)


@collector_paused()  # a day held in memory: its million objects are not scanned again and again
def report(plan: RunPlan) -> Path | None:
    folder = folder_of(plan)
    if not folder.exists(Artifact.RESULTS):
        log.warning("No results for run %s (refused, or the load step failed): no report", plan.run_id)
        return None
    result = folder.results()
    cost = folder.read_json(Artifact.COST)
    if cost:
        result.cost = from_dict(CostRecord, cost)
    path = render_report(result, folder.path, server_document=folder.read_json(Artifact.SERVER_METRICS))
    folder.publish(Artifact.REPORT)  # written by the renderer itself
    folder.publish(Artifact.CHARTS)
    result.report_path = folder.uri(Artifact.REPORT)
    folder.write_results(result)
    _publish(result.run_id, result.run_tag or result.run_id, folder)
    return path


def report_url(folder: RunFolder) -> str | None:
    """Where people open the report: under ``$STAMPEDE_REPORTS_BASE_URL`` when set, else its ``s3://`` or ``file://`` URI.

    Inside Airflow the report task's "Load test report" link and the DAG run's tab
    open it through the Airflow plugin instead (``plugins/stampede_reports.py``).
    """
    if not folder.exists(Artifact.REPORT):
        return None
    base = os.environ.get("STAMPEDE_REPORTS_BASE_URL")
    if base:
        return f"{base.rstrip('/')}/{folder.path.name}/{Artifact.REPORT}"
    if folder.store is not None:
        return folder.uri(Artifact.REPORT)
    return (folder.path / Artifact.REPORT).resolve().as_uri()


def _publish(run_id: str, run_tag: str, folder: RunFolder) -> None:
    """Copy the report files to S3 when configured; remember where the report is (an outage loses nothing local)."""
    try:
        uri = publish_to_s3(folder.path, run_tag) or report_url(folder)
    except (BotoCoreError, ClientError, OSError, ValueError) as exc:
        log.warning("Report files not copied to S3: %s: %s", type(exc).__name__, exc)
        uri = report_url(folder)
    if not uri:
        return
    store = RunStore()
    try:
        store.set_report_uri(run_id, uri)
    except SQLAlchemyError as exc:
        log.warning("Run history unavailable (%s): report link not recorded", type(exc).__name__)
    finally:
        store.close()
