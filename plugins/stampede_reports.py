"""Airflow plugin: each load-test run's report inside Airflow, for whoever may read the DAG run.

The API server mounts a FastAPI app at ``/stampede``:
``GET /stampede/reports/{dag_id}/{run_id}`` answers with the run's ``report.html``
(the same offline, self-contained HTML the report task wrote) read from the
run's folder in the artifact store (``STAMPEDE_ARTIFACTS_URL``, or the local
reports folder when Airflow runs on one host). The API server's own auth
applies: a Bearer token or the UI's ``_token`` cookie, and the DAG-run read
permission of ``dag_id`` (401 without a login, 403 without the permission).
The report appears as a "Load test report" tab on the DAG run's page
(``external_views``) and as the report task's "Load test report" link
(``stampede.surfaces.report_link``).

This file lives at the top of ``plugins/`` on purpose: ``plugins/stampede/`` is
hidden from Airflow's plugin loader (``.airflowignore``) because one of its
modules imports Locust; the stampede package is imported only when a page is
asked for.
"""

from __future__ import annotations

import html
import logging

from fastapi import Depends, FastAPI
from fastapi.responses import HTMLResponse

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)

URL_PREFIX = "/stampede"  # = stampede.surfaces.report_link.URL_PREFIX (not imported here: see above)

app = FastAPI(title="Stampede reports", docs_url=None, redoc_url=None, openapi_url=None)


def _page(status: int, title: str, text: str) -> HTMLResponse:
    body = f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title><h1>{html.escape(title)}</h1>" \
           f"<p>{html.escape(text)}</p>"
    return HTMLResponse(body, status_code=status)


def _run_exists(dag_id: str, run_id: str) -> bool:
    from sqlalchemy import select

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)) is not None


@app.get("/reports/{dag_id}/{run_id}", response_class=HTMLResponse,
         dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.RUN))])
def run_report(dag_id: str, run_id: str) -> HTMLResponse:
    """The run's report; 404 when the run is not one of ``dag_id``'s, or has no report (yet)."""
    if not _run_exists(dag_id, run_id):  # the permission was checked for dag_id: the run must be dag_id's
        return _page(404, "No such run", f"{dag_id} has no run {run_id}.")
    from stampede.surfaces.report_link import report_html

    try:
        report = report_html(run_id, dag_id)
    except Exception as exc:  # noqa: BLE001 - the store is down or misconfigured: say so, keep the API server up
        log.warning("Report of %s/%s unreadable: %s: %s", dag_id, run_id, type(exc).__name__, exc)
        return _page(503, "Report unavailable", f"The artifact store could not be read ({type(exc).__name__}).")
    if report is None:
        return _page(404, "No report yet",
                     f"Run {run_id} of {dag_id} has no load-test report: it is still running, or it was refused "
                     "before any load was sent (see the preflight task's log).")
    return HTMLResponse(report)


class StampedeReportsPlugin(AirflowPlugin):
    name = "stampede_reports"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Stampede reports"}]
    external_views = [{
        "name": "Load test report", "href": URL_PREFIX + "/reports/{DAG_ID}/{RUN_ID}",
        "destination": "dag_run", "url_route": "stampede-report",
    }]
