"""Server metrics: Prometheus parsing and configuration, a real scrape of the demo target, CloudWatch on moto."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timezone

import httpx
import pytest

from stampede.figures.server import (
    DEMO_SERIES, MetricsConfig, Sampler, SeriesSpec, collect_after_run, config_for, parse_prometheus, sampling, summarise,
)

TEXT = """\
# TYPE demo_http_requests_in_flight gauge
demo_http_requests_in_flight 3.0
# TYPE process_cpu_seconds_total counter
process_cpu_seconds_total 12.5
# TYPE http_requests counter
http_requests_total{route="/a",status="200"} 10.0
http_requests_total{route="/a",status="503"} 4.0
http_requests_total{route="/b",status="503"} 1.0
"""


def test_parse_sums_matching_labels_and_ignores_the_rest():
    series = [
        SeriesSpec("in_flight", "demo_http_requests_in_flight"),
        SeriesSpec("errors_a", "http_requests_total", labels={"route": "/a", "status": "503"}),
        SeriesSpec("all_503", "http_requests_total", labels={"status": "503"}),
        SeriesSpec("missing", "no_such_metric"),
    ]
    assert parse_prometheus(TEXT, series) == {"in_flight": 3.0, "errors_a": 4.0, "all_503": 5.0}


@pytest.mark.parametrize(
    ("raw", "expected_url", "names"),
    [
        pytest.param({"source": "prometheus", "series": "demo"}, "http://127.0.0.1:8123/metrics",
                     [s.name for s in DEMO_SERIES], id="default-url"),
        pytest.param({"source": "prometheus", "url": "{origin}/internal/metrics",
                      "series": [{"name": "cpu", "metric": "process_cpu_seconds_total", "kind": "rate", "role": "cpu"}]},
                     "http://127.0.0.1:8123/internal/metrics", ["cpu"], id="custom-series"),
        pytest.param({"source": "prometheus_server", "url": "http://127.0.0.1:9090",
                      "series": [{"name": "cpu", "query": "rate(process_cpu_seconds_total[30s])*100", "role": "cpu"}]},
                     "http://127.0.0.1:9090", ["cpu"], id="prometheus-server"),
    ],
)
def test_config_from_the_environment_block(raw, expected_url, names):
    config = MetricsConfig.from_dict(raw, target="http://127.0.0.1:8123/v1")
    assert config.url == expected_url
    assert [s.name for s in config.series] == names


def test_local_environment_scrapes_the_targets_origin_and_bad_config_is_named():
    config = config_for("local", "http://127.0.0.1:8123/v1")
    assert (config.source, config.url) == ("prometheus", "http://127.0.0.1:8123/metrics")
    with pytest.raises(ValueError, match="metrics.source"):
        MetricsConfig.from_dict({"source": "graphite"}, target="http://127.0.0.1:1/v1")
    with pytest.raises(ValueError, match="unknown keys"):
        MetricsConfig.from_dict({"source": "cloudwatch", "series": [{"name": "x", "metric": "y", "colour": 1}]},
                                target="http://127.0.0.1:1/v1")


def test_an_unreachable_endpoint_is_recorded_not_raised(tmp_path):
    from stampede.core.netutil import free_port

    with sampling(environment="local", target=f"http://127.0.0.1:{free_port()}/v1", max_s=5) as sampled:
        time.sleep(0.2)
    document = sampled.document
    assert document["error_count"] >= 1 and "ConnectError" in document["errors"][0]
    assert all(not s["points"] for s in document["series"].values())


@pytest.mark.integration
def test_scrapes_the_real_demo_target_while_it_is_under_load(tmp_path):
    from stampede.infra.demo_target.server import DemoTarget

    with DemoTarget(workdir=tmp_path / "t", pool_size=1, extra_latency_ms={"GET /v1/listings": 100}) as target:
        config = MetricsConfig.from_dict({"source": "prometheus", "interval_s": 0.2}, target=target.base_url)
        token = httpx.post(f"{target.base_url}/auth/login", json={
            "email": "agent@demo.stampede.local", "password": target.password}).json()["token"]
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
                while not stop.is_set():
                    client.get(f"{target.base_url}/listings")

        sampler = Sampler(config, max_s=30).start()
        threads = [threading.Thread(target=hammer) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(3)
        stop.set()
        for t in threads:
            t.join(timeout=15)
        sampler.stop()
    assert sampler.error_count == 0
    points = sampler.points
    assert len(points["memory_mib"]) >= 10 and all(30 < v < 2000 for _, v in points["memory_mib"])
    assert max(v for _, v in points["cpu_pct"]) > 1  # a rate of process_cpu_seconds_total, in % of a core
    assert {v for _, v in points["db_pool_size"]} == {1.0}
    assert max(v for _, v in points["db_pool_in_use"]) == 1.0
    assert max(v for _, v in points["db_pool_waiting"]) >= 1  # six clients, one connection
    summary = summarise({"source": "prometheus", "series": {
        name: {"role": spec.role, "unit": spec.unit, "points": points[name]} for name, spec in
        ((s.name, s) for s in config.series)}}, [])
    assert summary.series["db_pool_in_use"].max == 1.0


def test_summarise_gives_each_series_its_figures_per_stage_and_drops_credentials():
    document = {"source": "prometheus", "url": "http://scraper:hunter2@127.0.0.1:8123/metrics", "errors": ["timeout"],
                "error_count": 3, "series": {
                    "cpu_pct": {"role": "cpu", "unit": "%", "limit": None,
                                "points": [[100.0, 10.0], [101.0, 30.0], [105.0, 90.0], [106.0, 70.0]]},
                    "db_pool_size": {"role": "pool_size", "unit": "connections", "limit": 8, "points": []}}}
    stages = [{"name": "low", "start": 100.0, "end": 101.0}, {"name": "high", "start": 104.0, "end": 105.0},
              {"name": "never", "start": None, "end": None}]

    summary = summarise(document, stages)

    assert (summary.source, summary.errors, summary.first_error) == ("prometheus", 3, "timeout")
    assert "hunter2" not in summary.url and summary.url.endswith("@127.0.0.1:8123/metrics")
    cpu = summary.series["cpu_pct"]
    assert (cpu.samples, cpu.min, cpu.max, cpu.mean, cpu.last) == (4, 10.0, 90.0, 50.0, 70.0)
    assert {name: (s.mean, s.max) for name, s in cpu.per_stage.items()} == {"low": (20.0, 30.0), "high": (80.0, 90.0)}
    pool = summary.series["db_pool_size"]
    assert (pool.samples, pool.max, pool.limit, pool.per_stage) == (0, None, 8, {})


def test_summarise_without_a_document_is_no_source():
    assert summarise(None, []).source == "none" and summarise(None, []).series == {}


@pytest.fixture
def moto_cloudwatch(monkeypatch):
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the CloudWatch test")
    from stampede.core.netutil import free_port

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    try:
        yield
    finally:
        server.stop()


def test_cloudwatch_get_metric_data_against_moto(moto_cloudwatch):
    import boto3

    client = boto3.client("cloudwatch", region_name="eu-west-1")
    now = time.time()
    minute = now - now % 60
    dims = [{"Name": "DBInstanceIdentifier", "Value": "crm-staging"}]
    for offset, value in ((-120, 20.0), (-60, 55.0), (0, 93.0)):
        client.put_metric_data(Namespace="AWS/RDS", MetricData=[{
            "MetricName": "CPUUtilization", "Dimensions": dims, "Value": value, "Unit": "Percent",
            "Timestamp": datetime.fromtimestamp(minute + offset + 5, tz=timezone.utc)}])
    config = MetricsConfig.from_dict({"source": "cloudwatch", "region": "eu-west-1", "series": [
        {"name": "db_cpu_pct", "role": "cpu", "namespace": "AWS/RDS", "metric": "CPUUtilization",
         "dimensions": {"DBInstanceIdentifier": "crm-staging"}, "stat": "Maximum", "period": 60},
        {"name": "other_db", "role": "cpu", "namespace": "AWS/RDS", "metric": "CPUUtilization",
         "dimensions": {"DBInstanceIdentifier": "nope"}, "stat": "Maximum"},
    ]}, target="https://staging.example.invalid/v1")
    points, errors = collect_after_run(config, minute - 150, now)
    assert errors == []
    assert sorted(v for _, v in points["db_cpu_pct"]) == [20.0, 55.0, 93.0]
    assert points["other_db"] == []
