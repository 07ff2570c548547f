"""The target's own metrics while the load runs: Prometheus text, a Prometheus server, or CloudWatch.

Which source and which series is configured per environment (``metrics:`` in
``loadtests/environments.yaml``); ``local`` scrapes the target's ``/metrics``
with the demo target's preset. A series has a ``role`` that tells the
bottleneck analysis what it measures::

    cpu          % of one core (Prometheus: rate of process_cpu_seconds_total x 100)
    memory       MiB or %
    pool_size / pool_in_use / pool_waiting      a database connection pool
    connections  database connections (with an optional ``limit``)
    latency      server-side latency (ms)
    errors       server-side errors per second or per period

Sources:

- ``prometheus``: a :class:`Sampler` thread scrapes the URL every ``interval_s``
  while the stages run (bounded by the run's planned length) and parses it with
  ``prometheus_client.parser``; counters become per-second rates.
- ``prometheus_server``: after the stages, one ``/api/v1/query_range`` per series
  (``query`` is PromQL) over the run's window.
- ``cloudwatch``: after the stages, ``GetMetricData`` through boto3 over the run's
  window (CloudWatch's resolution is a minute; ``AWS_ENDPOINT_URL`` is honoured).

Everything lands in ``server_metrics.json`` in the run folder (points per series)
and :func:`summarise` turns it into results.json ``server``. A metrics problem
never fails the run by itself: it is recorded in ``errors`` and shown in the report.

Server-side thresholds (``{server: db_pool_waiting, stat: max, below: 1}`` in a scenario) are
judged on those same samples: after the run by :func:`observe` (the samples inside each stage's
judged part), and, for the ``prometheus`` source whose samples come while the load runs, also
mid-run: the sampler keeps its newest points in ``server_metrics.live.json`` beside the master's
output (:data:`LIVE_FILE_NAME`), which the master's threshold watch reads once a second. A
threshold on a series that was not sampled is *not judged*, never passed.
never fails the run: it is recorded in ``errors`` and shown in the report.

**Credentials in a metrics URL** (``https://user:secret@prometheus.internal``) are
split off when the config is read: HTTP clients get them as basic auth and only
ever see the URL without them, so neither httpx's own request log nor an
exception's text can carry them; every URL and error that is logged or stored is
redacted as well (``stampede.core.redact``).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from stampede.core import redact
from stampede.core.records import ServerSeries, ServerStage, ServerSummary
from stampede.core.thresholds import Observation, Samples, Threshold, Worst, sample_windows

__all__ = [
    "DEMO_SERIES", "LIVE_FILE_NAME", "MetricsConfig", "Sampler", "SeriesSpec", "collect_after_run", "config_for",
    "observe", "parse_prometheus", "read_live_points", "sampling", "summarise",
]

log = logging.getLogger(__name__)

FILE_NAME = "server_metrics.json"
DEFAULT_INTERVAL_S = 2.0
SCRAPE_TIMEOUT_S = 2.0
MAX_ERRORS_KEPT = 20
SOURCES = ("prometheus", "prometheus_server", "cloudwatch", "none")
LIVE_FILE_NAME = "server_metrics.live.json"  # the sampler's newest points, for the master's mid-run judgement
LIVE_KEEP_S = 660.0  # seconds of points the live file keeps: the longest threshold window (600 s) and a margin


@dataclass(frozen=True)
class SeriesSpec:
    """One series to sample.

    :param name: the series' name in server_metrics.json and the report (``cpu_pct``).
    :param metric: Prometheus sample name, CloudWatch metric name, or (prometheus_server) PromQL.
    :param role: what it measures (see the module docstring), or ``None``.
    :param kind: ``gauge`` (the value) or ``rate`` (per-second rate of a counter; scrape only).
    :param scale: multiplies every value (bytes → MiB, seconds → %).
    :param labels: Prometheus label filter; matching samples are summed. A value that starts with
        ``~`` is a regular expression the label must match in full (``{status: "~5.."}``: every 5xx).
    :param limit: a known ceiling (connections allowed, memory limit) for saturation checks.
    """

    name: str
    metric: str
    role: str | None = None
    unit: str = ""
    kind: str = "gauge"
    scale: float = 1.0
    labels: Mapping[str, str] = field(default_factory=dict)
    limit: float | None = None
    # CloudWatch only
    namespace: str = ""
    dimensions: Mapping[str, str] = field(default_factory=dict)
    stat: str = "Average"
    period_s: int = 60

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SeriesSpec:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known - {"query", "period"}
        if unknown:
            raise ValueError(f"metrics series {raw.get('name')!r}: unknown keys {sorted(unknown)}")
        data = dict(raw)
        if "query" in data:
            data["metric"] = data.pop("query")
        if "period" in data:
            data["period_s"] = int(data.pop("period"))
        return cls(**data)


MIB = 1 / (1024 * 1024)
DEMO_SERIES: tuple[SeriesSpec, ...] = (
    SeriesSpec("cpu_pct", "process_cpu_seconds_total", "cpu", "% of a core", kind="rate", scale=100.0),
    SeriesSpec("memory_mib", "process_resident_memory_bytes", "memory", "MiB", scale=MIB),
    SeriesSpec("db_pool_size", "demo_db_pool_size", "pool_size", "connections"),
    SeriesSpec("db_pool_in_use", "demo_db_pool_in_use", "pool_in_use", "connections"),
    SeriesSpec("db_pool_waiting", "demo_db_pool_waiting", "pool_waiting", "threads"),
    SeriesSpec("db_pool_timeouts_per_s", "demo_db_pool_timeouts_total", "errors", "/s", kind="rate"),
    SeriesSpec("http_5xx_per_s", "demo_http_requests_total", "errors", "/s", kind="rate", labels={"status": "~5.."}),
    SeriesSpec("requests_in_flight", "demo_http_requests_in_flight", None, "requests"),
)
PRESETS = {"demo": DEMO_SERIES}


@dataclass(frozen=True)
class MetricsConfig:
    """Where the target's metrics come from, and which series to keep."""

    source: str = "none"
    url: str | None = None  # scrape URL or Prometheus server base URL
    interval_s: float = DEFAULT_INTERVAL_S
    series: tuple[SeriesSpec, ...] = ()
    region: str | None = None  # CloudWatch
    auth: tuple[str, str] | None = field(default=None, repr=False)  # from the URL's user info; never logged

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, target: str) -> MetricsConfig:
        source = str(raw.get("source", "none"))
        if source not in SOURCES:
            raise ValueError(f"metrics.source: {source!r} is not one of {', '.join(SOURCES)}")
        series_raw = raw.get("series", "demo" if source == "prometheus" else [])
        if isinstance(series_raw, str):
            if series_raw not in PRESETS:
                raise ValueError(f"metrics.series: no preset named {series_raw!r} (presets: {', '.join(PRESETS)})")
            series = PRESETS[series_raw]
        else:
            series = tuple(SeriesSpec.from_dict(s) for s in series_raw or ())
        url = raw.get("url")
        if url:
            url = str(url).replace("{origin}", origin_of(target))
        elif source == "prometheus":
            url = f"{origin_of(target)}/metrics"
        url, auth = split_credentials(url)
        return cls(source=source, url=url, interval_s=float(raw.get("interval_s", DEFAULT_INTERVAL_S)),
                   series=series, region=raw.get("region"), auth=auth)


def split_credentials(url: str | None) -> tuple[str | None, tuple[str, str] | None]:
    """``url`` without its user info, and the user info as (user, password) for basic auth."""
    if not url:
        return url, None
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None
    if parts.username is None and parts.password is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=netloc).geturl(), (unquote(parts.username or ""), unquote(parts.password or ""))


def origin_of(target: str) -> str:
    parts = urlsplit(target)
    return f"{parts.scheme}://{parts.netloc}"


def config_for(environment: str, target: str) -> MetricsConfig:
    """The environment's ``metrics:`` block; ``local`` without one scrapes ``<origin>/metrics`` (demo preset)."""
    from stampede.plan.environments import load_environments

    env = load_environments().get(environment)
    raw = dict(env.metrics) if env is not None and env.metrics else {}
    if not raw and environment == "local":
        raw = {"source": "prometheus", "series": "demo"}
    return MetricsConfig.from_dict(raw or {"source": "none"}, target=target)


# -- Prometheus text ------------------------------------------------------------------------
def parse_prometheus(text: str, series: Sequence[SeriesSpec]) -> dict[str, float]:
    """The raw (unscaled, not yet rated) value of each series found in one scrape."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted: dict[str, list[SeriesSpec]] = {}
    for spec in series:
        wanted.setdefault(spec.metric, []).append(spec)
    values: dict[str, float] = {}
    present: set[str] = set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            for spec in wanted.get(sample.name, ()):
                present.add(spec.name)
                if all(_label_matches(sample.labels.get(k), v) for k, v in spec.labels.items()):
                    values[spec.name] = values.get(spec.name, 0.0) + float(sample.value)
    # a metric whose samples match none of the labels sums to 0 (no 5xx yet), which is a value, not a gap
    return {**{name: 0.0 for name in present}, **values}


def _label_matches(value: str | None, wanted: str) -> bool:
    if wanted.startswith("~"):
        return value is not None and re.fullmatch(wanted[1:], value) is not None
    return value == wanted



class Sampler:
    """Scrape Prometheus text every ``interval_s`` on a daemon thread until stopped or ``max_s`` passed."""

    def __init__(self, config: MetricsConfig, *, max_s: float, live_path: Path | None = None) -> None:
        self.config = config
        self.max_s = max_s
        self.live_path = live_path
        self.points: dict[str, list[list[float]]] = {s.name: [] for s in config.series}
        self.errors: list[str] = []
        self.error_count = 0
        self.scrapes = 0
        self._previous: dict[str, tuple[float, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="stampede-server-metrics", daemon=True)

    def start(self) -> Sampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=SCRAPE_TIMEOUT_S + 2)

    def _loop(self) -> None:
        deadline = time.monotonic() + self.max_s
        with httpx.Client(timeout=SCRAPE_TIMEOUT_S, follow_redirects=False, auth=self.config.auth) as client:
            while time.monotonic() < deadline:
                self.scrape_once(client)
                if self._stop.wait(self.config.interval_s):
                    break
            self.scrape_once(client)  # the last moment of the run

    def scrape_once(self, client: httpx.Client) -> None:
        now = time.time()
        try:
            response = client.get(str(self.config.url))
            response.raise_for_status()
            raw = parse_prometheus(response.text, self.config.series)
        except (httpx.HTTPError, ValueError) as exc:
            self._error(f"{type(exc).__name__}: {exc}")
            return
        self.scrapes += 1
        for spec in self.config.series:
            if spec.name not in raw:
                continue
            value = raw[spec.name]
            if spec.kind == "rate":
                previous = self._previous.get(spec.name)
                self._previous[spec.name] = (now, value)
                if previous is None or now <= previous[0]:
                    continue
                value = max(0.0, value - previous[1]) / (now - previous[0])
            self.points[spec.name].append([round(now, 3), round(value * spec.scale, 4)])
        if self.live_path is not None:
            self._write_live(now)

    def _write_live(self, now: float) -> None:
        """The newest points, replaced atomically, for the master's mid-run server thresholds."""
        recent = {name: [p for p in points[-int(LIVE_KEEP_S) :] if p[0] >= now - LIVE_KEEP_S]
                  for name, points in self.points.items()}
        tmp = f"{self.live_path}.tmp"
        try:
            Path(self.live_path).parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "w") as handle:
                json.dump({"series": recent}, handle)
            os.replace(tmp, self.live_path)
        except OSError as exc:
            self._error(f"live samples not written: {exc}")

    def _error(self, message: str) -> None:
        message = redact.text(message)
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(message)
        if self.error_count == 1:
            log.warning("Server metrics: scrape of %s failed (%s); the run goes on", redact.url(self.config.url), message)


# -- after-the-run sources -------------------------------------------------------------------
def _prometheus_server(config: MetricsConfig, start: float, end: float) -> tuple[dict, list[str]]:
    points: dict[str, list[list[float]]] = {}
    errors: list[str] = []
    base = str(config.url).rstrip("/")
    with httpx.Client(timeout=10, follow_redirects=False, auth=config.auth) as client:
        for spec in config.series:
            try:
                response = client.get(f"{base}/api/v1/query_range", params={
                    "query": spec.metric, "start": start, "end": end, "step": max(1.0, config.interval_s),
                })
                response.raise_for_status()
                body = response.json()
                series = body.get("data", {}).get("result", [])
                summed: dict[float, float] = {}
                for s in series:
                    for t, v in s.get("values", []):
                        summed[float(t)] = summed.get(float(t), 0.0) + float(v)
                points[spec.name] = [[t, round(v * spec.scale, 4)] for t, v in sorted(summed.items())]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                errors.append(redact.text(f"{spec.name}: {type(exc).__name__}: {exc}"))
    return points, errors


def _cloudwatch(config: MetricsConfig, start: float, end: float) -> tuple[dict, list[str]]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client("cloudwatch", region_name=config.region)  # AWS_ENDPOINT_URL honoured by boto3
    queries, ids = [], {}
    for index, spec in enumerate(config.series):
        query_id = f"m{index}"
        ids[query_id] = spec
        queries.append({
            "Id": query_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": spec.namespace, "MetricName": spec.metric,
                    "Dimensions": [{"Name": k, "Value": str(v)} for k, v in spec.dimensions.items()],
                },
                "Period": int(spec.period_s), "Stat": spec.stat,
            },
            "ReturnData": True,
        })
    points: dict[str, list[list[float]]] = {s.name: [] for s in config.series}
    errors: list[str] = []
    if not queries:
        return points, errors
    # CloudWatch aligns periods to the minute: widen the window so a short run still gets its minute
    window_start = datetime.fromtimestamp(start - start % 60, tz=timezone.utc)
    window_end = datetime.fromtimestamp(end + 60 - end % 60, tz=timezone.utc)
    token = None
    try:
        for _ in range(50):  # pages, bounded
            kwargs = {"MetricDataQueries": queries, "StartTime": window_start, "EndTime": window_end,
                      "ScanBy": "TimestampAscending"}
            if token:
                kwargs["NextToken"] = token
            answer = client.get_metric_data(**kwargs)
            for result in answer.get("MetricDataResults", []):
                spec = ids.get(result["Id"])
                if spec is None:
                    continue
                for t, v in zip(result.get("Timestamps", []), result.get("Values", [])):
                    points[spec.name].append([t.timestamp(), round(float(v) * spec.scale, 4)])
            token = answer.get("NextToken")
            if not token:
                break
    except (BotoCoreError, ClientError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    for values in points.values():
        values.sort()
    return points, errors


def collect_after_run(config: MetricsConfig, start: float, end: float) -> tuple[dict, list[str]]:
    """Points per series for sources that are queried once the run is over."""
    if config.source == "prometheus_server":
        return _prometheus_server(config, start, end)
    if config.source == "cloudwatch":
        return _cloudwatch(config, start, end)
    return {}, []


# -- the pipeline's entry point --------------------------------------------------------------
@dataclass
class Sampled:
    """What :func:`sampling` collected: the ``server_metrics.json`` document, once the body has ended."""

    document: dict | None = None


def read_live_points(path: str | Path) -> dict[str, list]:
    """The live file's ``{series: [[t, value], ...]}``; empty while it does not exist (yet) or is unreadable."""
    try:
        with open(path) as handle:
            return dict(json.load(handle).get("series") or {})
    except (OSError, ValueError, AttributeError):
        return {}


@contextmanager
def sampling(*, environment: str, target: str, max_s: float, live_path: Path | None = None) -> Iterator[Sampled]:
    """Sample the target's metrics while the body runs; the document is complete after it.

    :param live_path: where the scraping sampler keeps its newest points while the body runs (the
        master reads them for mid-run server thresholds); removed when the body ends.
    """
    try:
        config = config_for(environment, target)
    except ValueError as exc:
        config, config_error = MetricsConfig(), redact.text(str(exc))
        log.warning("Server metrics not sampled: %s", config_error)
    else:
        config_error = None
    sampler = (Sampler(config, max_s=max_s, live_path=live_path).start()
               if config.source == "prometheus" and config.series else None)
    started = time.time()
    sampled = Sampled()
    try:
        yield sampled
    finally:
        ended = time.time()
        errors: list[str] = [config_error] if config_error else []
        if sampler is not None:
            sampler.stop()
            if live_path is not None:
                Path(live_path).unlink(missing_ok=True)
            points, errors, count = sampler.points, errors + sampler.errors, sampler.error_count
        else:
            points, more = collect_after_run(config, started, ended)
            errors, count = errors + more, len(errors) + len(more)
        sampled.document = {
            "source": config.source, "url": redact.url(config.url), "interval_s": config.interval_s,
            "started_at": started, "ended_at": ended,
            "series": {
                s.name: {"role": s.role, "unit": s.unit, "limit": s.limit, "points": points.get(s.name, [])}
                for s in config.series
            },
            "errors": errors, "error_count": count,
        }


def load(run_dir: Path) -> dict | None:
    path = Path(run_dir) / FILE_NAME
    return json.loads(path.read_text()) if path.exists() else None


def summarise(document: Mapping[str, Any] | None, stages: Sequence[Mapping[str, Any]]) -> ServerSummary:
    """results.json ``server``: per series min/mean/max/last, and per stage mean/max.

    :param document: ``server_metrics.json`` as :func:`sampling` wrote it, or None (nothing sampled).
    :param stages: locust_output's stages (``name``, ``start``, ``end`` in epoch seconds).
    """
    if not document:
        return ServerSummary()
    errors = document.get("errors") or []
    summary = ServerSummary(
        source=document.get("source") or "none", url=redact.url(document.get("url")),
        errors=document.get("error_count", len(errors)), first_error=errors[0] if errors else None,
    )
    for name, entry in (document.get("series") or {}).items():
        points = entry.get("points") or []
        values = [v for _, v in points]
        series = ServerSeries(role=entry.get("role"), unit=entry.get("unit"), limit=entry.get("limit"),
                              samples=len(values))
        summary.series[name] = series
        if not values:
            continue
        series.min, series.max, series.last = min(values), max(values), values[-1]
        series.mean = round(sum(values) / len(values), 3)
        for stage in stages:
            if stage.get("start") is None:
                continue
            end = stage.get("end") or float("inf")
            inside = [v for t, v in points if stage["start"] <= t <= end + 1]
            if inside:
                series.per_stage[stage["name"]] = ServerStage(mean=round(sum(inside) / len(inside), 3), max=max(inside))
    return summary


def observe(document: Mapping[str, Any] | None, stage: str, rules: Sequence[tuple[int, Threshold]], *,
            start: float, end: float, part: str) -> list[Observation]:
    """What each server-side threshold of one stage measured on the samples inside its judged part.

    :param rules: ``(position in the stage's table, threshold)``; thresholds on requests are skipped.
    :param start: the judged part's first second (epoch), ``end`` its end.
    :param part: ``steady`` or ``whole``, for the reasons of what could not be judged.
    """
    series = (document or {}).get("series") or {}
    source = (document or {}).get("source") or "none"
    found = []
    for position, rule in rules:
        if rule.server is None:
            continue
        entry = series.get(rule.server)
        value, at, reason = None, None, ""
        if entry is None:
            reason = (f"no server metrics were sampled (source: {source})" if not series else
                      f"series {rule.server!r} was not sampled (sampled: {', '.join(sorted(series))})")
        elif rule.window_s:
            worst = Worst()
            for t, samples in sample_windows(entry.get("points") or [], start, end, rule.window_s):
                worst.offer(rule, rule.value_of(samples), int(t))
            value, at = worst.value, worst.at
            reason = "" if value is not None else f"no {rule.window_s} s window of {rule.server} samples in the {part} part"
        else:
            samples = Samples(tuple(v for t, v in entry.get("points") or [] if start <= t <= end))
            value = rule.value_of(samples)
            reason = "" if value is not None else f"no samples of {rule.server} during the {part} part"
        found.append(Observation(stage=stage, index=position, threshold=rule, subject=rule.server, value=value,
                                 reason=reason, at=at))
    return found
