"""Airflow plugin: a "Load test report" link on the report task of every load-test DAG.

In Airflow 3 a *global* operator extra link is resolved by the API server when
the UI asks for a task instance's links: ``get_link`` runs there, with the
task instance's key, and reads the URL the ``report`` task pushed to XCom
under ``report_url`` (``$STAMPEDE_REPORTS_BASE_URL/<run tag>/report.html``, or a
``file://`` URI when no base URL is set; a browser may refuse to open file URIs
from an http page, so teams set the base URL). Tasks without that XCom get an
empty link, which the UI shows disabled.

This file lives at the top of ``plugins/`` on purpose: ``plugins/stampede/`` is
hidden from Airflow's plugin loader (``.airflowignore``) because one of its
modules imports Locust. Nothing here imports the ``stampede`` package.
"""

from __future__ import annotations

import json
import logging

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

XCOM_KEY = "report_url"
LINK_NAME = "Load test report"


class LoadTestReportLink(BaseOperatorLink):
    """The run's HTML report, from the report task's ``report_url`` XCom."""

    name = LINK_NAME

    def get_link(self, operator, *, ti_key) -> str:  # noqa: ANN001 (Airflow's signature)
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = session.execute(
                XComModel.get_many(
                    key=XCOM_KEY, run_id=ti_key.run_id, dag_ids=ti_key.dag_id,
                    task_ids=ti_key.task_id, map_indexes=ti_key.map_index,
                ).with_only_columns(XComModel.value)
            ).first()
        if not row:
            return ""
        value = row.value
        try:
            value = json.loads(value) if isinstance(value, (str, bytes)) else value
        except ValueError:
            pass
        return value if isinstance(value, str) and value.startswith(("http://", "https://", "file://", "s3://")) else ""


class StampedeReportLinkPlugin(AirflowPlugin):
    name = "stampede_report_link"
    global_operator_extra_links = [LoadTestReportLink()]
