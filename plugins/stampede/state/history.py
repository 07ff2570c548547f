"""Run history: every run stored with its histograms, baseline pins, the baseline of a run, report files in S3.

Every run is stored (upserted by run id) in the shared state database
(:mod:`stampede.state.db`: SQLite in the reports folder by default, PostgreSQL
for a deployment, ``STAMPEDE_STATE_URL``; ``STAMPEDE_HISTORY_URL`` and the
Variable ``stampede_history_url`` still work as its aliases). A row keeps
the run's figures and its per-stage, per-endpoint latency histograms, so a later
run is compared with distributions, not with a bare number. Report files may
also be copied to S3 (``STAMPEDE_REPORTS_S3_URI=s3://bucket/prefix``).

The baseline of a run is the run pinned by a person for its scenario and target
(``stampede baseline pin RUN_ID``), else the last passing run of the same
scenario and target before it. Loopback targets match whatever their port (a
demo target gets a new one each start). Comparing a run with its baseline is
:mod:`stampede.analysis.comparison`'s business: this module only stores.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Column, String, Table, Text, delete, insert, select, update
from sqlalchemy.engine import Engine

from stampede.core import redact
from stampede.core.netutil import is_loopback_host
from stampede.core.paths import Artifact
from stampede.core.records import RunResult, to_dict
from stampede.state import db

__all__ = ["RunStore", "history_url", "publish_to_s3", "target_key"]

log = logging.getLogger(__name__)

ENV_BASELINE = "STAMPEDE_BASELINE_RUN_ID"
VARIABLE_BASELINE = "stampede_baseline_run_id"
ENV_S3 = "STAMPEDE_REPORTS_S3_URI"
TREND_RUNS = 10

runs = Table(
    "stampede_runs", db.metadata,
    Column("run_id", String(250), primary_key=True),
    Column("scenario", String(250), nullable=False, index=True),
    Column("target_key", String(500), nullable=False, index=True),
    Column("target", String(500), nullable=False),
    Column("environment", String(100), nullable=False),
    Column("verdict", String(16), nullable=False),
    Column("started_at", String(40), nullable=False, index=True),
    Column("finished_at", String(40), nullable=False),
    Column("recorded_at", String(40), nullable=False),
    Column("stages_json", Text, nullable=False),  # per-stage figures and endpoints (no series)
    Column("histograms_json", Text, nullable=False),  # {stage: {endpoint: {histogram, failures}}}
    Column("report_uri", String(1000)),
)
pins = Table(
    "stampede_baseline_pins", db.metadata,
    Column("scenario", String(250), primary_key=True),
    Column("target_key", String(500), primary_key=True),
    Column("run_id", String(250), nullable=False),
    Column("pinned_by", String(250)),
    Column("pinned_at", String(40), nullable=False),
)

TABLES = (runs, pins)


def history_url() -> str:
    """Where the history is: the shared state database (:func:`stampede.state.db.state_url`)."""
    return db.state_url()


def target_key(target: str) -> str:
    """How runs of "the same target" are matched: loopback ignores the (ephemeral) port."""
    parts = urlsplit(target.rstrip("/"))
    host = (parts.hostname or "").lower()
    if is_loopback_host(host):
        return f"{parts.scheme}://loopback{parts.path}"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}{parts.path}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- the store -----------------------------------------------------------------------------
class RunStore:
    """Runs and baseline pins in one database (tables ``stampede_runs``, ``stampede_baseline_pins``).

    :param url: a SQLAlchemy database URL; default the shared state (:func:`history_url`).
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or history_url()

    @property
    def engine(self) -> Engine:
        return db.engine(self.url, tables=TABLES)

    def close(self) -> None:
        """Nothing to close: the engine is the process's shared one (:func:`stampede.state.db.dispose_all`)."""

    def record(self, result: RunResult, histograms: Mapping[str, Any], *, report_uri: str | None = None) -> None:
        """Store one run; the same run id again replaces it (idempotent).

        :param histograms: per stage, per endpoint ``{histogram, failures}``
            (:func:`stampede.analysis.comparison.judged_histograms`).
        """
        stages = [{k: v for k, v in to_dict(s).items() if k not in ("ramp", "steady")} for s in result.stages]
        row = {
            "run_id": result.run_id, "scenario": result.scenario, "target": result.target,
            "target_key": target_key(result.target), "environment": result.environment,
            "verdict": result.verdict, "started_at": result.started_at, "finished_at": result.finished_at,
            "recorded_at": _now(), "stages_json": json.dumps(stages, default=str),
            "histograms_json": json.dumps(histograms), "report_uri": report_uri,
        }
        with self.engine.begin() as conn:
            existing = conn.execute(select(runs.c.report_uri).where(runs.c.run_id == row["run_id"])).first()
            if existing is None:
                conn.execute(insert(runs).values(**row))
            else:
                row["report_uri"] = report_uri or existing.report_uri
                conn.execute(update(runs).where(runs.c.run_id == row["run_id"]).values(**row))

    def set_report_uri(self, run_id: str, uri: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(runs).where(runs.c.run_id == run_id).values(report_uri=uri))

    def get(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return _row(row) if row else None

    def recent(self, scenario: str, target: str, *, limit: int = TREND_RUNS, until: str | None = None) -> list[dict]:
        """The last ``limit`` runs of the scenario on the target, oldest first."""
        query = select(runs).where(runs.c.scenario == scenario, runs.c.target_key == target_key(target))
        if until:
            query = query.where(runs.c.started_at <= until)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(runs.c.started_at.desc(), runs.c.run_id.desc()).limit(limit)).mappings()
            return [_row(r) for r in reversed(list(rows))]

    def pin(self, run_id: str, *, by: str | None = None) -> dict[str, Any]:
        """Make ``run_id`` the baseline of its scenario and target until unpinned."""
        run = self.get(run_id)
        if run is None:
            raise LookupError(f"no run {run_id!r} in the history ({self.url_redacted})")
        with self.engine.begin() as conn:
            key = {"scenario": run["scenario"], "target_key": run["target_key"]}
            conn.execute(delete(pins).where(pins.c.scenario == key["scenario"], pins.c.target_key == key["target_key"]))
            conn.execute(insert(pins).values(**key, run_id=run_id, pinned_by=by, pinned_at=_now()))
        return {"run_id": run_id, **key}

    def unpin(self, scenario: str, target: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(delete(pins).where(pins.c.scenario == scenario, pins.c.target_key == target_key(target)))
        return bool(done.rowcount)

    def baseline_for(self, result: RunResult) -> tuple[dict[str, Any] | None, str]:
        """(baseline run's history row, why it was chosen) for this run, never the run itself."""
        scenario, key, run_id = result.scenario, target_key(result.target), result.run_id
        override = os.environ.get(ENV_BASELINE) or (db.airflow_variable(VARIABLE_BASELINE) if "airflow.sdk" in sys.modules else None)
        if override and override != run_id:
            run = self.get(override)
            if run and run["scenario"] == scenario and run["target_key"] == key:
                return run, f"pinned by {ENV_BASELINE if os.environ.get(ENV_BASELINE) else 'Airflow Variable ' + VARIABLE_BASELINE}"
        with self.engine.connect() as conn:
            pinned = conn.execute(select(pins).where(pins.c.scenario == scenario, pins.c.target_key == key)).mappings().first()
            if pinned and pinned["run_id"] != run_id:
                run = self.get(pinned["run_id"])
                if run:
                    return run, f"pinned{' by ' + pinned['pinned_by'] if pinned['pinned_by'] else ''} on {pinned['pinned_at'][:10]}"
            row = conn.execute(
                select(runs).where(
                    runs.c.scenario == scenario, runs.c.target_key == key, runs.c.verdict == "pass",
                    runs.c.run_id != run_id, runs.c.started_at < result.started_at,
                ).order_by(runs.c.started_at.desc()).limit(1)
            ).mappings().first()
        if row:
            return _row(row), "the last passing run of the same scenario and target"
        return None, "no earlier passing run of this scenario and target"

    @property
    def url_redacted(self) -> str:
        return redact.url(self.url)


def _row(row: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(row)
    data["stages"] = json.loads(data.pop("stages_json") or "[]")
    data["histograms"] = json.loads(data.pop("histograms_json") or "{}")
    return data


# -- report files in S3 ------------------------------------------------------------------------
def publish_to_s3(run_dir: Path, run_tag: str, uri: str | None = None) -> str | None:
    """Copy the report, results and charts to ``$STAMPEDE_REPORTS_S3_URI/<run tag>/``; the report's s3:// URI."""
    uri = uri or os.environ.get(ENV_S3)
    if not uri:
        return None
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise ValueError(f"{ENV_S3}: {uri!r} is not s3://bucket/prefix")
    import boto3

    bucket, prefix = parts.netloc, parts.path.strip("/")
    client = boto3.client("s3")  # AWS_ENDPOINT_URL and the usual credential chain apply
    run_dir = Path(run_dir)
    names = (Artifact.REPORT, Artifact.RESULTS, Artifact.SERVER_METRICS)
    files = [run_dir / n for n in names if (run_dir / n).exists()]
    charts = run_dir / Artifact.CHARTS
    files += sorted(charts.glob("*.png")) if charts.is_dir() else []
    types = {".html": "text/html; charset=utf-8", ".json": "application/json", ".png": "image/png"}
    for path in files:
        key = "/".join(p for p in (prefix, run_tag, path.relative_to(run_dir).as_posix()) if p)
        client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": types.get(path.suffix, "application/octet-stream")})
    log.info("Report files of %s copied to s3://%s/%s", run_tag, bucket, "/".join(p for p in (prefix, run_tag) if p))
    return f"s3://{bucket}/{'/'.join(p for p in (prefix, run_tag, 'report.html') if p)}"
