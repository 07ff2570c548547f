"""Run history: store, baseline, trend rows, S3, and a real regression (two CLI runs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from stampede.analysis.comparison import trend
from stampede.core.histogram import LatencyHistogram
from stampede.core.records import PhaseFigures, RunResult, StageResult
from stampede.state.history import RunStore, history_url, publish_to_s3, target_key


def hist(values_ms, failures: int = 0) -> dict:
    h = LatencyHistogram()
    for v in values_ms:
        h.record_ms(v)
    return {"histogram": {str(k): c for k, c in h.to_dict().items()}, "failures": failures}


def results(run_id: str, started: str, verdict: str = "pass", target: str = "http://127.0.0.1:8001/v1") -> RunResult:
    figures = PhaseFigures(duration_s=60, requests=3000, failures=0, rps=50.0, p50_ms=8.0, p95_ms=20.0, p99_ms=30.0,
                           error_rate=0.0)
    stage = StageResult(name="normal", scenario="nightly", users=100, duration_s=60, requests=3000, failures=0,
                        rps=50.0, p50_ms=8.0, p95_ms=20.0, p99_ms=30.0, max_ms=40.0, error_rate=0.0, steady=figures)
    return RunResult(run_id=run_id, scenario="nightly", target=target, verdict=verdict, started_at=started,
                     finished_at=started, stages=[stage], environment="local")


@pytest.fixture
def store(tmp_path):
    s = RunStore(f"sqlite:///{tmp_path / 'history.sqlite'}")
    yield s
    s.close()


def test_loopback_targets_match_whatever_their_port_and_others_keep_it():
    assert target_key("http://127.0.0.1:8001/v1") == target_key("http://localhost:9999/v1/")
    assert target_key("https://staging.example.com/v1") != target_key("https://staging.example.com:8443/v1")


def test_baseline_is_the_last_earlier_passing_run_unless_one_is_pinned(store):
    h = {"normal": {"GET /a": hist([10] * 40)}}
    store.record(results("r1", "2026-01-01T00:00:00+00:00"), h)
    store.record(results("r2", "2026-01-02T00:00:00+00:00"), h)
    store.record(results("r3", "2026-01-03T00:00:00+00:00", verdict="fail"), h)
    store.record(results("other", "2026-01-03T12:00:00+00:00", target="https://staging.example.com/v1"), h)
    current = results("r4", "2026-01-04T00:00:00+00:00", target="http://127.0.0.1:9/v1")
    store.record(current, h)
    store.record(current, h)  # idempotent by run id
    assert store.baseline_for(current)[0]["run_id"] == "r2"
    store.pin("r1", by="ana")
    baseline, why = store.baseline_for(current)
    assert baseline["run_id"] == "r1" and "pinned by ana" in why
    assert store.unpin("nightly", "http://127.0.0.1:1/v1")
    assert store.baseline_for(current)[0]["run_id"] == "r2"
    assert store.baseline_for(results("r1", "2026-01-01T00:00:00+00:00"))[0] is None
    runs = store.recent("nightly", "http://127.0.0.1:5/v1", until=current.started_at)
    assert [r["run_id"] for r in runs] == ["r1", "r2", "r3", "r4"]
    points = trend(runs)
    assert [t.verdict for t in points] == ["pass", "pass", "fail", "pass"]
    assert points[0].stages["normal"].p95_ms == 20.0 and points[0].stages["normal"].users == 100
    with pytest.raises(LookupError):
        store.pin("nope")


def test_a_row_keeps_the_stage_figures_without_the_phases_and_the_histograms(store):
    h = {"normal": {"GET /a": hist([10] * 40, failures=2)}}
    store.record(results("r1", "2026-01-01T00:00:00+00:00"), h, report_uri="file:///r1/report.html")
    store.record(results("r1", "2026-01-01T00:00:00+00:00"), h)  # a re-record keeps the report link
    row = store.get("r1")
    assert row["histograms"] == h and row["report_uri"] == "file:///r1/report.html"
    (stage,) = row["stages"]
    assert stage["name"] == "normal" and stage["p95_ms"] == 20.0 and "steady" not in stage and "ramp" not in stage


def test_the_history_url_is_shown_without_its_password():
    store = RunStore("postgresql+psycopg://stampede:s3cret@db.example:5432/history")
    assert "s3cret" not in store.url_redacted and store.url_redacted.endswith("@db.example:5432/history")


def test_the_default_history_is_the_shared_state_in_the_reports_root(tmp_path, monkeypatch):
    for name in ("STAMPEDE_STATE_URL", "STAMPEDE_HISTORY_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STAMPEDE_REPORTS_DIR", str(tmp_path / "reports"))
    assert history_url() == f"sqlite:///{tmp_path / 'reports' / 'stampede.sqlite'}"


def test_the_old_history_url_is_an_alias_of_the_state_url(tmp_path, monkeypatch):
    monkeypatch.delenv("STAMPEDE_STATE_URL", raising=False)
    monkeypatch.setenv("STAMPEDE_HISTORY_URL", f"sqlite:///{tmp_path / 'old.sqlite'}")
    assert history_url() == f"sqlite:///{tmp_path / 'old.sqlite'}"
    monkeypatch.setenv("STAMPEDE_STATE_URL", f"sqlite:///{tmp_path / 'state.sqlite'}")
    assert history_url() == f"sqlite:///{tmp_path / 'state.sqlite'}"  # the new name wins


def test_report_files_are_copied_to_s3(tmp_path, monkeypatch):
    moto_server = pytest.importorskip("moto.server", reason="moto[server] is needed for the S3 test")
    import boto3

    from stampede.core.netutil import free_port

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        for name, value in (("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}"), ("AWS_ACCESS_KEY_ID", "testing"),
                            ("AWS_SECRET_ACCESS_KEY", "testing"), ("AWS_DEFAULT_REGION", "us-east-1")):
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3")
        s3.create_bucket(Bucket="loadtest-reports")
        (tmp_path / "charts").mkdir()
        (tmp_path / "report.html").write_text("<html></html>")
        (tmp_path / "results.json").write_text("{}")
        (tmp_path / "charts" / "load.png").write_bytes(b"\x89PNG")
        uri = publish_to_s3(tmp_path, "LT-run1", "s3://loadtest-reports/nightly")
        keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="loadtest-reports")["Contents"])
        head = s3.head_object(Bucket="loadtest-reports", Key="nightly/LT-run1/report.html")
    finally:
        server.stop()
    assert uri == "s3://loadtest-reports/nightly/LT-run1/report.html"
    assert keys == ["nightly/LT-run1/charts/load.png", "nightly/LT-run1/report.html", "nightly/LT-run1/results.json"]
    assert head["ContentType"].startswith("text/html")


# -- a real regression: two CLI runs against the demo target, the second with a slowed endpoint -----
SCENARIO = (
    "name: regress\njourneys: {agent: 60, broker: 20, admin: 5, readonly: 15}\nthink_time_s: [0.1, 0.4]\n"
    "stages:\n  - {name: busy, users: 10, spawn_rate: 10, duration_s: 10}\n"
    "thresholds: {p95_ms: 1000, error_rate: 0.05}\nabort_on_breach: false\n"
)
SLACK_TOKEN = "xoxb-history-test"


@pytest.fixture(scope="module")
def baseline_then_slowed(tmp_path_factory):
    from stampede.infra.demo_target.server import DemoTarget
    from stampede.infra.slack_standin import SlackStandin

    root = tmp_path_factory.mktemp("regression")
    scenario = root / "regress.yaml"
    scenario.write_text(SCENARIO)
    with SlackStandin(token=SLACK_TOKEN) as slack:
        env = dict(os.environ, STAMPEDE_HISTORY_URL=f"sqlite:///{root / 'history.sqlite'}",
                   STAMPEDE_SLACK_TOKEN=SLACK_TOKEN, STAMPEDE_SLACK_BASE_URL=slack.base_url,
                   STAMPEDE_SLACK_CHANNEL="C0LOADTEST")
        out = {}
        for name, slow in (("base", {}), ("slow", {"GET /v1/listings": 60})):
            with DemoTarget(workdir=root / f"{name}-target", extra_latency_ms=slow) as target:
                completed = subprocess.run(
                    [sys.executable, "-m", "stampede.surfaces.cli", "run", "--target", target.base_url, "--scenario",
                     str(scenario), "--workers", "0", "--out", str(root / name)],
                    capture_output=True, text=True, timeout=240, env=env)
            assert completed.returncode == 0, completed.stderr[-3000:]
            out[name] = json.loads((root / name / "results.json").read_text())
        yield out, root, slack.messages(), slack.files(), slack


@pytest.mark.integration
def test_the_slowed_endpoint_and_nothing_else_is_named_as_regressed(baseline_then_slowed):
    runs, root, _, _, _ = baseline_then_slowed
    comparison = runs["slow"]["comparison"]
    assert comparison["baseline_run_id"] == runs["base"]["run_id"]
    assert [(r["stage"], r["endpoint"]) for r in comparison["regressions"]] == [("busy", "GET /listings")], comparison
    assert runs["base"]["comparison"]["verdict"] == "no baseline"
    assert [t["run_id"] for t in runs["slow"]["trend"]] == [runs["base"]["run_id"], runs["slow"]["run_id"]]
    html = (root / "slow" / "report.html").read_text()
    for section in ("Baseline comparison", "Bottlenecks", "Server metrics", "Trend", "Scaling recommendations",
                    "Validation (Great Expectations)"):
        assert f"<h2>{section}</h2>" in html
    assert "regressed: busy · GET /listings" in html
    assert (root / "slow" / "charts" / "trend.png").exists() and (root / "slow" / "charts" / "server.png").exists()


@pytest.mark.integration
def test_slack_gets_the_comparison_the_top_bottleneck_and_the_chart(baseline_then_slowed):
    runs, _, messages, files, slack = baseline_then_slowed
    summary = [m for m in messages if "Load test PASS: regress" in m.get("text", "")]  # the broadcast replies
    assert len(summary) == 2
    parents = [u for u in slack.updates() if "Load test PASS: regress" in u["text"]]  # each thread's summary
    assert len(parents) == 2
    blocks = json.dumps(parents[-1]["blocks"])
    assert "*Baseline*: REGRESSED" in blocks and "GET /listings" in blocks
    assert "Open the report" in blocks
    charts = [f for f in files if f["filename"] == "load.png"]
    assert len(charts) == 2 and all(f["completed"] and f["channel"] == "C0LOADTEST" for f in charts)
    assert slack.file_bytes(charts[-1]["file_id"])[:4] == b"\x89PNG"
