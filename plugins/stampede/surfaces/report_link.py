"""The run's report inside Airflow: the "Load test report" link on the report task, and the page behind it.

The page is served by the Airflow plugin ``plugins/stampede_reports.py`` (a
FastAPI app mounted by the API server at ``/stampede``) to whoever may read the
DAG run, from the run's folder in the artifact store: the same offline HTML as
``report.html``, wherever the report task ran. The link is an operator link of
the report task alone (``operator_extra_links``): the worker resolves it as the
task ends, to the page's http(s) address when the task wrote a report and to
nothing otherwise; Airflow 3.3's UI shows only same-origin, http(s) and mailto
links, and hides empty ones.
"""

from __future__ import annotations

from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from stampede.core.paths import Artifact

LINK_NAME = "Load test report"
URL_PREFIX = "/stampede"  # where the API server mounts the plugin's app
XCOM_KEY = "report_url"  # pushed by the report task when it wrote a report


def report_page_path(dag_id: str, run_id: str) -> str:
    return f"{URL_PREFIX}/reports/{quote(dag_id, safe='')}/{quote(run_id, safe='')}"


def report_page_url(dag_id: str, run_id: str, *, base_url: str | None = None) -> str:
    """``[api] base_url`` + the page (relative, hence same-origin, when no base URL is configured)."""
    if base_url is None:
        from airflow.sdk.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    return f"{base_url.rstrip('/')}{report_page_path(dag_id, run_id)}"


class LoadTestReportLink(BaseOperatorLink):
    """The run's report, when the report task wrote one."""

    name = LINK_NAME

    def get_link(self, operator, *, ti_key) -> str:  # noqa: ANN001 (Airflow's signature)
        from airflow.sdk.execution_time.xcom import XCom

        if not XCom.get_value(ti_key=ti_key, key=XCOM_KEY):
            return ""
        return report_page_url(ti_key.dag_id, ti_key.run_id)


def report_html(run_id: str, dag_id: str) -> str | None:
    """The run's ``report.html`` from its run folder (the artifact store when configured), or None."""
    from stampede.steps.folder import folder_for_run

    folder = folder_for_run(run_id, dag_id=dag_id)
    return folder.read_text(Artifact.REPORT) if folder.exists(Artifact.REPORT) else None
