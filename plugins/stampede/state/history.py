"""Run history, the baseline, the regression verdict and trends.

Every run is stored (upserted by run id) in a SQLAlchemy database: SQLite in the
reports folder by default (``sqlite:///<reports>/history.sqlite``), any database
URL for a team (``STAMPEDE_HISTORY_URL`` or the Airflow Variable
``stampede_history_url``, for example ``postgresql+psycopg://...``). A row keeps
the run's figures and its per-stage, per-endpoint latency histograms, so a later
run is compared with distributions, not with a bare number. Report files may
also be copied to S3 (``STAMPEDE_REPORTS_S3_URI=s3://bucket/prefix``).

The baseline of a run is the run pinned by a person for its scenario and target
(``stampede baseline pin RUN_ID``), else the last passing run of the same
scenario and target before it. Loopback targets match whatever their port (a
demo target gets a new one each start).

Regression verdict, per stage and per endpoint (:func:`compare`):

- both samples need ``min_requests`` requests, otherwise "insufficient data";
- "regressed" when the p95 grew by more than ``max(tolerance x old p95, floor_ms)``
  *and* the whole distribution moved: the probability that a request of the new
  run is slower than one of the baseline (computed exactly from the two
  histograms; 0.5 means no difference) is at least ``min_prob_slower`` and
  significant by the Mann-Whitney rank test (one-sided, 1 %); "improved" the
  other way round. Distribution-free 95 % confidence intervals of both p95s
  (order statistics) are reported as evidence;
- or when the error rate grew by more than ``error_rate_abs``, significantly
  (two-proportion z-test).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Column, MetaData, String, Table, Text, create_engine, delete, insert, select, update

from stampede.core.histogram import LatencyHistogram
from stampede.core.netutil import is_loopback_host

__all__ = [
    "Tolerance", "RunStore", "compare", "history_url", "judged_histograms", "publish_to_s3", "target_key", "trend",
]

log = logging.getLogger(__name__)

ENV_URL = "STAMPEDE_HISTORY_URL"
VARIABLE_URL = "stampede_history_url"
ENV_BASELINE = "STAMPEDE_BASELINE_RUN_ID"
VARIABLE_BASELINE = "stampede_baseline_run_id"
ENV_S3 = "STAMPEDE_REPORTS_S3_URI"
TREND_RUNS = 10
Z_95 = 1.959964
Z_ONE_SIDED_99 = 2.326348

metadata = MetaData()
runs = Table(
    "stampede_runs", metadata,
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
    "stampede_baseline_pins", metadata,
    Column("scenario", String(250), primary_key=True),
    Column("target_key", String(500), primary_key=True),
    Column("run_id", String(250), nullable=False),
    Column("pinned_by", String(250)),
    Column("pinned_at", String(40), nullable=False),
)


def history_url() -> str:
    """$STAMPEDE_HISTORY_URL, else the Airflow Variable (when Airflow is loaded), else SQLite in the reports folder."""
    url = os.environ.get(ENV_URL)
    if not url and "airflow.sdk" in sys.modules:
        url = _variable(VARIABLE_URL)
    if url:
        return url
    from stampede.core.paths import reports_root

    root = reports_root()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'history.sqlite'}"


def _variable(name: str) -> str | None:
    try:
        from airflow.sdk import Variable

        return Variable.get(name, default=None)
    except Exception as exc:  # no API server / metadata DB here: the default applies
        log.debug("Airflow Variable %s not available (%s)", name, type(exc).__name__)
        return None


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

    :param url: a SQLAlchemy database URL; default :func:`history_url`.
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url or history_url()

    @cached_property
    def engine(self):
        engine = create_engine(self.url, future=True)
        metadata.create_all(engine)
        return engine

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()

    def record(self, results: Mapping[str, Any], histograms: Mapping[str, Any], *, report_uri: str | None = None) -> None:
        """Store one run; the same run id again replaces it (idempotent)."""
        stages = [{k: v for k, v in s.items() if k not in ("ramp", "steady")} for s in results.get("stages") or []]
        row = {
            "run_id": results["run_id"], "scenario": results["scenario"], "target": results["target"],
            "target_key": target_key(results["target"]), "environment": results.get("environment", ""),
            "verdict": results["verdict"], "started_at": results["started_at"], "finished_at": results["finished_at"],
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

    def baseline_for(self, results: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """(baseline run, why it was chosen) for this run, never the run itself."""
        scenario, key, run_id = results["scenario"], target_key(results["target"]), results["run_id"]
        override = os.environ.get(ENV_BASELINE) or (_variable(VARIABLE_BASELINE) if "airflow.sdk" in sys.modules else None)
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
                    runs.c.run_id != run_id, runs.c.started_at < results["started_at"],
                ).order_by(runs.c.started_at.desc()).limit(1)
            ).mappings().first()
        if row:
            return _row(row), "the last passing run of the same scenario and target"
        return None, "no earlier passing run of this scenario and target"

    @property
    def url_redacted(self) -> str:
        parts = urlsplit(self.url)
        return self.url.replace(parts.password, "***") if parts.password else self.url


def _row(row: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(row)
    data["stages"] = json.loads(data.pop("stages_json") or "[]")
    data["histograms"] = json.loads(data.pop("histograms_json") or "{}")
    return data


def judged_histograms(output: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per stage, per endpoint: the histogram and failures of the part the stage was judged on.

    The same choice as ``metrics.stage_results``: the steady part when it has requests, else the whole stage.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    phases = output.get("phases") or {}
    for index, stage in enumerate(output.get("stages") or []):
        steady = phases.get(f"{index}/steady") or {}
        parts = [steady] if any(sum(e["histogram"].values()) for e in steady.values()) else [
            phases.get(f"{index}/ramp") or {}, steady]
        merged: dict[str, dict[str, Any]] = {}
        for part in parts:
            for name, entry in part.items():
                slot = merged.setdefault(name, {"histogram": LatencyHistogram(), "failures": 0})
                slot["histogram"].merge({int(k): v for k, v in entry["histogram"].items()})
                slot["failures"] += int(entry.get("failures", 0))
        out[stage["name"]] = {n: {"histogram": {str(k): v for k, v in s["histogram"].to_dict().items()},
                                  "failures": s["failures"]} for n, s in merged.items()}
    return out


# -- comparison --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Tolerance:
    """How much worse counts as a regression, and how many requests a verdict needs."""

    relative: float = 0.25  # p95 may grow by 25 % ...
    floor_ms: float = 10.0  # ... or 10 ms, whichever is larger
    min_requests: int = 30
    error_rate_abs: float = 0.01  # error rate may grow by one percentage point
    min_prob_slower: float = 0.65  # effect size: a new request slower than a baseline one at least this often

    @classmethod
    def from_env(cls) -> Tolerance:
        def get(name: str, default: float) -> float:
            return float(os.environ.get(name, default))

        return cls(
            relative=get("STAMPEDE_REGRESSION_TOLERANCE", cls.relative),
            floor_ms=get("STAMPEDE_REGRESSION_FLOOR_MS", cls.floor_ms),
            min_requests=int(get("STAMPEDE_REGRESSION_MIN_REQUESTS", cls.min_requests)),
            error_rate_abs=get("STAMPEDE_REGRESSION_ERROR_RATE", cls.error_rate_abs),
        )


def _hist(entry: Mapping[str, Any] | None) -> LatencyHistogram:
    return LatencyHistogram({int(k): v for k, v in ((entry or {}).get("histogram") or {}).items()})


def _value_at_rank(histogram: LatencyHistogram, rank: int) -> float | None:
    """The ``rank``-th smallest value (1-based) in ms, as ``percentile_ms`` reports a bucket."""
    if histogram.total == 0:
        return None
    rank = min(max(rank, 1), histogram.total)
    seen = 0
    for bucket in sorted(histogram.counts):
        seen += histogram.counts[bucket]
        if seen >= rank:
            return LatencyHistogram({bucket: 1}).percentile_ms(0.5)
    return histogram.max_ms()


def quantile_ci(histogram: LatencyHistogram, q: float = 0.95, z: float = Z_95) -> tuple[float | None, float | None]:
    """Distribution-free confidence interval of the ``q`` quantile (order statistics, normal approximation)."""
    n = histogram.total
    if n == 0:
        return None, None
    half = z * math.sqrt(n * q * (1 - q))
    low, high = math.floor(n * q - half), math.ceil(n * q + half) + 1
    return _value_at_rank(histogram, low), _value_at_rank(histogram, high)


def prob_slower(new: LatencyHistogram, old: LatencyHistogram) -> float | None:
    """P(a request of ``new`` is slower than one of ``old``), ties counting half (0.5: no difference)."""
    if not new.total or not old.total:
        return None
    old_sorted = sorted(old.counts.items())
    below, wins, index = 0, 0.0, 0
    for bucket, count in sorted(new.counts.items()):
        while index < len(old_sorted) and old_sorted[index][0] < bucket:
            below += old_sorted[index][1]
            index += 1
        ties = old_sorted[index][1] if index < len(old_sorted) and old_sorted[index][0] == bucket else 0
        wins += count * (below + ties / 2)
    return round(wins / (new.total * old.total), 4)


def _rank_z(prob: float, n_new: int, n_old: int) -> float:
    """Mann-Whitney rank-sum z from P(slower): how sure the new distribution sits above the old one."""
    sd = math.sqrt(n_new * n_old * (n_new + n_old + 1) / 12)
    return 0.0 if sd == 0 else (prob - 0.5) * n_new * n_old / sd


def _error_z(f_new: int, n_new: int, f_old: int, n_old: int) -> float:
    pooled = (f_new + f_old) / (n_new + n_old)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n_new + 1 / n_old))
    return 0.0 if se == 0 else (f_new / n_new - f_old / n_old) / se


def compare_pair(new: Mapping[str, Any] | None, old: Mapping[str, Any] | None, tol: Tolerance) -> dict[str, Any]:
    """One endpoint (or a whole stage) of the run against the same in the baseline."""
    hn, ho = _hist(new), _hist(old)
    fn, fo = int((new or {}).get("failures", 0)), int((old or {}).get("failures", 0))
    out: dict[str, Any] = {
        "requests": hn.total, "baseline_requests": ho.total,
        "p95_ms": hn.percentile_ms(0.95), "baseline_p95_ms": ho.percentile_ms(0.95),
        "p50_ms": hn.percentile_ms(0.5), "baseline_p50_ms": ho.percentile_ms(0.5),
        "error_rate": round(fn / hn.total, 6) if hn.total else None,
        "baseline_error_rate": round(fo / ho.total, 6) if ho.total else None,
    }
    if min(hn.total, ho.total) < tol.min_requests:
        out.update(verdict="insufficient data", why=(
            f"{min(hn.total, ho.total)} requests < {tol.min_requests} needed for a verdict"))
        return out
    p_new, p_old = out["p95_ms"], out["baseline_p95_ms"]
    ci_new, ci_old = quantile_ci(hn), quantile_ci(ho)
    allowed = max(tol.relative * p_old, tol.floor_ms)
    out.update(
        change_ms=round(p_new - p_old, 3), change_pct=round((p_new - p_old) / p_old, 4) if p_old else None,
        allowed_ms=round(allowed, 3), p95_ci=ci_new, baseline_p95_ci=ci_old, prob_slower=prob_slower(hn, ho),
    )
    z = _error_z(fn, hn.total, fo, ho.total)
    out["error_z"] = round(z, 2)
    shift_z = _rank_z(out["prob_slower"], hn.total, ho.total)
    out["shift_z"] = round(shift_z, 2)
    reasons = []
    if p_new - p_old > allowed and shift_z > Z_ONE_SIDED_99 and out["prob_slower"] >= tol.min_prob_slower:
        reasons.append(
            f"p95 {p_old:.1f} → {p_new:.1f} ms (+{p_new - p_old:.1f} ms, allowed {allowed:.1f}); a request is slower "
            f"than a baseline one with probability {out['prob_slower']:.2f} (rank test z {shift_z:.1f}, "
            f"{ho.total} vs {hn.total} requests); p95 95 % CIs [{ci_old[0]:.1f}, {ci_old[1]:.1f}] → "
            f"[{ci_new[0]:.1f}, {ci_new[1]:.1f}] ms")
    if fn / hn.total - fo / ho.total > tol.error_rate_abs and z > Z_95:
        reasons.append(f"errors {fo / ho.total:.2%} → {fn / hn.total:.2%} (z {z:.1f})")
    if reasons:
        verdict, why = "regressed", "; ".join(reasons)
    elif p_old - p_new > allowed and shift_z < -Z_ONE_SIDED_99 and out["prob_slower"] <= 1 - tol.min_prob_slower:
        verdict, why = "improved", f"p95 {p_old:.1f} → {p_new:.1f} ms ({p_new - p_old:.1f} ms), significant"
    else:
        verdict, why = "unchanged", f"p95 {p_old:.1f} → {p_new:.1f} ms: within ±{allowed:.1f} ms or not significant"
    out.update(verdict=verdict, why=why)
    return out


def _stage_total(endpoints: Mapping[str, Any]) -> dict[str, Any]:
    merged = LatencyHistogram.merged(_hist(e) for e in endpoints.values())
    return {"histogram": merged.to_dict(), "failures": sum(int(e.get("failures", 0)) for e in endpoints.values())}


def compare(
    current: Mapping[str, Any], current_histograms: Mapping[str, Any],
    baseline: Mapping[str, Any] | None, *, why: str = "", tolerance: Tolerance | None = None,
) -> dict[str, Any]:
    """results.json ``comparison``: per stage and per endpoint, with an overall verdict."""
    tol = tolerance or Tolerance.from_env()
    if baseline is None:
        return {"baseline_run_id": None, "verdict": "no baseline", "why": why, "stages": [], "regressions": []}
    base_hist = baseline.get("histograms") or {}
    base_stages = {s["name"]: s for s in baseline.get("stages") or []}
    stages, regressions, improvements = [], [], []
    for stage in current.get("stages") or []:
        name = stage["name"]
        if name not in base_hist or name not in current_histograms:
            stages.append({"name": name, "verdict": "not in baseline", "endpoints": []})
            continue
        new_eps, old_eps = current_histograms[name], base_hist[name]
        total = compare_pair(_stage_total(new_eps), _stage_total(old_eps), tol)
        endpoints = []
        for endpoint in sorted(set(new_eps) | set(old_eps)):
            if endpoint not in new_eps or endpoint not in old_eps:
                endpoints.append({"name": endpoint, "verdict": "new" if endpoint in new_eps else "gone"})
                continue
            pair = {"name": endpoint, **compare_pair(new_eps[endpoint], old_eps[endpoint], tol)}
            endpoints.append(pair)
            if pair["verdict"] == "regressed":
                regressions.append({"stage": name, "endpoint": endpoint, "why": pair["why"]})
            elif pair["verdict"] == "improved":
                improvements.append({"stage": name, "endpoint": endpoint, "why": pair["why"]})
        old_stage = base_stages.get(name, {})
        stages.append({
            "name": name, "users": stage.get("users"), "baseline_users": old_stage.get("users"),
            "rps": stage.get("rps"), "baseline_rps": old_stage.get("rps"), **total, "endpoints": endpoints,
        })
    verdict = "regressed" if regressions or any(s.get("verdict") == "regressed" for s in stages) else (
        "improved" if improvements else "unchanged")
    return {
        "baseline_run_id": baseline["run_id"], "baseline_started_at": baseline.get("started_at"),
        "baseline_verdict": baseline.get("verdict"), "why": why, "verdict": verdict,
        "tolerance": {"relative": tol.relative, "floor_ms": tol.floor_ms, "min_requests": tol.min_requests,
                      "error_rate_abs": tol.error_rate_abs, "min_prob_slower": tol.min_prob_slower},
        "regressions": regressions, "improvements": improvements, "stages": stages,
    }


def trend(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """results.json ``trend``: per run (oldest first) its verdict and per-stage p95, req/s and errors."""
    return [{
        "run_id": run["run_id"], "started_at": run["started_at"], "verdict": run["verdict"],
        "stages": {s["name"]: {"users": s.get("users"), "p95_ms": s.get("p95_ms"), "p99_ms": s.get("p99_ms"),
                               "rps": s.get("rps"), "error_rate": s.get("error_rate")} for s in run["stages"]},
    } for run in history]


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
    files = [run_dir / n for n in ("report.html", "results.json", "server_metrics.json") if (run_dir / n).exists()]
    files += sorted((run_dir / "charts").glob("*.png")) if (run_dir / "charts").is_dir() else []
    types = {".html": "text/html; charset=utf-8", ".json": "application/json", ".png": "image/png"}
    for path in files:
        key = "/".join(p for p in (prefix, run_tag, path.relative_to(run_dir).as_posix()) if p)
        client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": types.get(path.suffix, "application/octet-stream")})
    log.info("Report files of %s copied to s3://%s/%s", run_tag, bucket, "/".join(p for p in (prefix, run_tag) if p))
    return f"s3://{bucket}/{'/'.join(p for p in (prefix, run_tag, 'report.html') if p)}"
