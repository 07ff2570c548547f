"""A Prometheus URL with credentials: used as basic auth, never in a log line, the run folder, results or the report."""

from __future__ import annotations

import base64
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from stampede.figures.server import MetricsConfig, sampling
from stampede.infra.canary import Canary
from stampede.steps.analyse import analyse
from stampede.steps.preflight import RunRequest, preflight
from stampede.steps.report import report
from stampede.surfaces.sequence import run_load

SECRET = "S3cret-metrics-pw-4711"
METRICS = "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\n"


class AuthMetrics:
    """Prometheus text behind basic auth (scraper:SECRET); 401 otherwise. Records the Authorization headers."""

    def __init__(self) -> None:
        self.authorizations: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                header = self.headers.get("Authorization") or ""
                server.authorizations.append(header)
                good = header == "Basic " + base64.b64encode(f"scraper:{SECRET}".encode()).decode()
                body = METRICS.encode() if good else b"unauthorized"
                self.send_response(200 if good else 401)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def metrics():
    server = AuthMetrics()
    yield server
    server.close()


def _environments(tmp_path: Path, monkeypatch, url: str) -> None:
    path = tmp_path / "environments.yaml"
    path.write_text(yaml.safe_dump({"environments": {"local": {"allow_load": True, "max_users": 100, "metrics": {
        "source": "prometheus", "url": url, "interval_s": 0.5,
        "series": [{"name": "cpu_pct", "metric": "process_cpu_seconds_total", "kind": "rate", "role": "cpu"}],
    }}}}))
    monkeypatch.setenv("STAMPEDE_ENVIRONMENTS_FILE", str(path))


def test_credentials_become_basic_auth_and_leave_the_url():
    config = MetricsConfig.from_dict({"source": "prometheus", "url": f"http://scraper:{SECRET}@127.0.0.1:9/metrics"},
                                     target="http://127.0.0.1:1/v1")
    assert config.url == "http://127.0.0.1:9/metrics" and config.auth == ("scraper", SECRET)
    assert SECRET not in repr(config)


@pytest.mark.parametrize("password", [SECRET, "wrong-" + SECRET], ids=["accepted", "refused"])
def test_a_credentialed_scrape_leaks_nothing_into_logs_or_the_document(tmp_path, monkeypatch, metrics, password,
                                                                       caplog):
    caplog.set_level(logging.DEBUG)  # httpx logs every request URL at INFO
    _environments(tmp_path, monkeypatch, f"http://scraper:{password}@127.0.0.1:{metrics.port}/metrics")
    with sampling(environment="local", target="http://127.0.0.1:1/v1", max_s=5) as sampled:
        threading.Event().wait(1.2)
    assert metrics.authorizations and all(a.startswith("Basic ") for a in metrics.authorizations)
    document = sampled.document
    if password == SECRET:
        assert document["series"]["cpu_pct"]["points"] and not document["errors"]
    else:
        assert document["error_count"] >= 1 and "401" in document["errors"][0]
    assert SECRET not in str(document) and SECRET not in caplog.text


@pytest.mark.integration
def test_a_run_with_a_credentialed_metrics_url_keeps_the_secret_out_of_every_file(tmp_path, monkeypatch, metrics, caplog):
    caplog.set_level(logging.DEBUG)
    _environments(tmp_path, monkeypatch, f"http://scraper:{SECRET}@127.0.0.1:{metrics.port}/metrics")
    scenario = tmp_path / "poll.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "poll", "locustfile": str(Path(__file__).parents[1] / "polling_locustfile.py"),
        "journeys": {"PollingUser": 1}, "think_time_s": [0.1, 0.2],
        "stages": [{"name": "hold", "users": 2, "spawn_rate": 2, "duration_s": 3}],
    }))
    with Canary() as canary:
        plan = preflight(RunRequest(scenarios=[str(scenario)], target=canary.base_url, run_id="metrics-creds",
                                    workers=0, out_dir=str(tmp_path / "run")))
        run_load(plan)
        analyse(plan)
        report(plan)
    files = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"results.json", "report.html", "server_metrics.json"}
    assert any(a.startswith("Basic ") for a in metrics.authorizations)  # the credentials were used
    for path in files:
        assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in caplog.text
