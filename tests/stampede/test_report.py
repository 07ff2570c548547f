"""The HTML report: self-contained, complete, escaped, and robust to odd runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stampede.core import fmt
from stampede.core.records import (
    Breach,
    Check,
    CleanupResult,
    EndpointResult,
    GeneratorHealth,
    PhaseFigures,
    RunResult,
    SeriesPoint,
    StageResult,
    Stop,
)
from stampede.core.stops import StopKind
from stampede.render.charts import MAX_POINTS, bucketed, stage_spans
from stampede.render.report import headline, render_report

T0 = 1_760_000_000
TARGET = "https://staging.example.com/v1"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EVIL = "<script>alert(1)</script>"


CLEAN = CleanupResult(created=40, deleted=40, left=0, ok=True)


def phase(duration_s: float, requests: int, p95: float | None) -> PhaseFigures:
    return PhaseFigures(
        duration_s=duration_s, requests=requests, failures=0, rps=requests / duration_s if duration_s else 0.0,
        p50_ms=None if p95 is None else p95 / 4, p95_ms=p95, p99_ms=None if p95 is None else p95 * 2,
        error_rate=0.0,
    )


def stage(name: str, users: int, *, requests: int = 6000, passed: bool = True) -> StageResult:
    empty = requests == 0
    return StageResult(
        name=name, scenario="normal", users=users, duration_s=60, requests=requests,
        failures=0 if empty else 12, rps=requests / 60,
        p50_ms=None if empty else 40.0, p95_ms=None if empty else 180.0,
        p99_ms=None if empty else 420.0, max_ms=None if empty else 1300.0,
        error_rate=0.0 if empty else 12 / requests,
        endpoints=[] if empty else [
            EndpointResult("GET /escrows", requests - 100, 2, 35.0, 170.0, 400.0, {"HTTP 503": 2}),
            EndpointResult(EVIL, 100, 10, 50.0, 250.0, 600.0, {f"boom {EVIL}": 10}),
        ],
        checks=[
            Check("p95_ms", "<", 200.0, None if empty else 180.0, passed),
            Check("error_rate", "<", 0.01, None if empty else 12 / requests, True),
        ],
        passed=passed,
        ramp=phase(20, requests // 4 or 1, None if empty else 150.0),
        steady=phase(40, requests, None if empty else 180.0),
        thresholds={"p95_ms": 200.0, "p99_ms": 500.0, "min_rps": 50.0},
    )


def series_for(stages: list[StageResult], seconds_per_stage: int = 60) -> list[SeriesPoint]:
    points = []
    for i, s in enumerate(stages):
        for k in range(seconds_per_stage):
            quiet = s.requests == 0
            points.append(SeriesPoint(
                t=T0 + i * seconds_per_stage + k, stage=s.name,
                phase="ramp" if k < seconds_per_stage // 3 else "steady",
                users=min(s.users, (k + 1) * 10), requests=0 if quiet else 100 + k % 7,
                failures=int(k % 5 == 0), p50_ms=None if quiet else 40.0,
                p95_ms=None if quiet else 150.0 + k, p99_ms=None if quiet else 400.0,
            ))
    return points


def run_result(stages: list[StageResult], *, verdict: str = "pass", series: list[SeriesPoint] | None = None,
               cleanup: CleanupResult = CLEAN, **extra) -> RunResult:
    return RunResult(
        run_id="manual__2025-10-09T02:00:00", scenario="normal", target=TARGET, verdict=verdict,
        started_at="2025-10-09T02:00:00+00:00", finished_at="2025-10-09T02:05:00+00:00",
        stages=stages, series=series_for(stages) if series is None else series, cleanup=cleanup,
        environment="staging", run_tag="LT-manual20251009T020000", workers=2, **extra,
    )


def render(tmp_path: Path, result: RunResult) -> str:
    path = render_report(result, tmp_path / "out")
    assert path == tmp_path / "out" / "report.html"
    return path.read_text(encoding="utf-8")


def test_report_is_complete_and_self_contained(tmp_path):
    stages = [stage("ramp-up", 100), stage("hold", 200)]
    html = render(tmp_path, run_result(stages))

    # the only URL in the file is the target, as plain text; nothing is fetched
    assert set(re.findall(r"https?://[^\s<\"']+", html)) == {TARGET}
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "<link" not in html and "<script" not in html and "@import" not in html

    assert "PASS: all 2 judged stages met their thresholds" in html and 'class="banner pass"' in html
    assert "CLEANUP INCOMPLETE" not in html and "Clean: every entity the run created was deleted." in html
    for name in ("ramp-up", "hold", "GET /escrows", "HTTP 503"):
        assert name in html
    assert "p95_ms" in html and "error_rate" in html and "180 ms" in html
    assert html.count("<svg") == 2
    assert html.index("Stages") < html.index("Checks") < html.index("<svg") < html.index("Endpoints")
    for chart in ("load", "latency"):
        assert (tmp_path / "out" / "charts" / f"{chart}.png").read_bytes()[:8] == PNG_MAGIC


def test_run_strings_are_escaped(tmp_path):
    result = run_result([stage(f"stage {EVIL}", 100)])
    result.target = f"https://x.example/{EVIL}"
    html = render(tmp_path, result)

    assert EVIL not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.parametrize(
    ("verdict", "css", "words"),
    [
        pytest.param("fail", "banner fail", "FAIL: thresholds breached in hold", id="fail"),
        pytest.param("invalid", "banner invalid", "the generator, not the target, was the limit", id="invalid"),
    ],
)
def test_not_passing_verdicts_show_their_banner(tmp_path, verdict, css, words):
    result = run_result(
        [stage("ramp-up", 100), stage("hold", 200, passed=False)],
        verdict=verdict,
        generator=GeneratorHealth(cpu_max_pct=97.0, saturated=verdict == "invalid", processes=3),
        aborted=True,
        stopped=Stop(reason="threshold p95_ms breached in stage hold", kind=StopKind.ABORT),
        breaches=[Breach(stage="hold", metric="p95_ms", threshold=200.0, value=950.0, at=T0, window_s=10)],
        cleanup=CleanupResult(created=40, deleted=37, left=3, ok=False, error="DELETE /escrows/9 → 500"),
    )
    html = render(tmp_path, result)

    assert css in html and words in html
    assert ("stopped before its planned end: threshold p95_ms breached in stage hold "
            "(a threshold marked abort held over its window)") in html
    assert "Breach in hold: p95 observed 950 ms, threshold 200 ms." in html
    assert "— and CLEANUP INCOMPLETE: 3 test entities left" in html
    assert "DELETE /escrows/9 → 500" in html
    assert 'class="fail"' in html


def test_empty_series_and_no_stages_render(tmp_path):
    html = render(tmp_path, run_result([], verdict="invalid", series=[]))

    assert "no stage produced results" in html.lower()
    assert "No time series was recorded" in html
    assert (tmp_path / "out" / "charts" / "load.png").read_bytes()[:8] == PNG_MAGIC


def test_stage_without_requests_renders_dashes(tmp_path):
    stages = [stage("warmup", 10, requests=0), stage("hold", 100)]
    html = render(tmp_path, run_result(stages))

    assert "warmup" in html and "No requests recorded in this stage." in html
    assert "–" in html


def test_many_stages_and_odd_stage_names(tmp_path):
    names = [f"step-{i:02d}" for i in range(19)] + ["$x^2$ 🔥 peak"]
    html = render(tmp_path, run_result([stage(n, 50 * (i + 1)) for i, n in enumerate(names)]))

    for name in names:
        assert name in html


def test_long_series_is_bucketed_and_spans_follow_the_stages():
    stages = [stage("a", 10), stage("b", 20)]
    series = series_for(stages, seconds_per_stage=43_200)

    spans = stage_spans(series)
    data = bucketed(series)

    assert [(s.name, s.start, s.end, s.steady_from) for s in spans] == [
        ("a", T0, T0 + 43_200, T0 + 14_400),
        ("b", T0 + 43_200, T0 + 86_400, T0 + 43_200 + 14_400),
    ]
    assert len(data["x"]) <= MAX_POINTS and data["width"] == 44
    assert 100 <= data["requests"].min() and data["requests"].max() <= 107
    assert data["p95_ms"].max() == 150.0 + 43_199


def test_a_single_silent_second_still_draws(tmp_path):
    silent = [SeriesPoint(t=T0, stage=None, phase=None, users=None, requests=0, failures=0,
                          p50_ms=None, p95_ms=None, p99_ms=None)]
    html = render(tmp_path, run_result([stage("idle", 1, requests=0)], series=silent))

    assert html.count("<svg") == 2


@pytest.mark.parametrize(
    ("cleanup", "words"),
    [
        pytest.param(CleanupResult(created=50, deleted=38, left=12, ok=True), "12 test entities left", id="left"),
        pytest.param(CleanupResult(), "unknown how many test entities are left", id="never-ran"),
        pytest.param(CleanupResult(created=50, left=-1, ok=False, error="ConnectError"),
                     "unknown how many test entities are left", id="failed-before-counting"),
        pytest.param(CleanupResult(created=50, deleted=50, left=0, ok=False, error="403"),
                     "cleanup reported errors, though it counted none left", id="errors"),
    ],
)
def test_a_pass_that_left_test_data_never_reads_as_a_clean_pass(tmp_path, cleanup, words):
    html = render(tmp_path, run_result([stage("hold", 100)], cleanup=cleanup))

    assert f"CLEANUP INCOMPLETE: {words} — load test thresholds met" in html
    assert 'class="banner warn"' in html and 'class="banner pass"' not in html
    assert "PASS: all" not in html and "Clean: every entity" not in html
    assert "delete it by the run tag <code>LT-manual20251009T020000</code>" in html


def test_ramp_vs_steady_shows_only_the_parts_that_have_figures(tmp_path):
    no_ramp = stage("hold", 100)
    no_ramp.ramp = phase(0, 0, None)  # a stage that starts at full load: a ramp of 0 s that sent nothing
    html = render(tmp_path, run_result([stage("ramp-up", 100), no_ramp]))

    table = html[html.index("<h3>Ramp vs steady</h3>"):html.index("<h2>Checks</h2>")]
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)</td>", table)
    assert rows == [("ramp-up", "ramp"), ("ramp-up", "steady (judged)"), ("hold", "steady (judged)")]
    assert ">0 s<" not in table


def test_figures_read_as_core_fmt_writes_them(tmp_path):
    long_stage = stage("hold", 1500)
    long_stage.duration_s = 100
    html = render(tmp_path, run_result([long_stage]))

    assert fmt.duration(100) == "1 min 40 s" and ">1 min 40 s<" in html  # the same as Slack writes it
    assert ">1,500<" in html and "180 ms" in html and "0.20%" in html


def test_the_headline_of_a_fail_without_failed_stages_says_why_it_stopped():
    result = run_result([stage("hold", 100)], verdict="fail", aborted=True,
                        stopped=Stop(reason="GET /health: 503", kind=StopKind.TARGET_UNHEALTHY))

    assert headline(result).startswith("FAIL: the target failed its health check between stages")


def test_the_target_is_shown_without_credentials(tmp_path):
    result = run_result([stage("hold", 100)])
    result.target = "https://loadtest:hunter2@staging.example.com/v1"
    html = render(tmp_path, result)

    assert "hunter2" not in html and "https://***@staging.example.com/v1" in html


def _drift_finding(stage_name: str = "normal", title: str = "p95 of all requests rose 38 % (24 ms → 33 ms) from hour 14 of normal"):
    from stampede.core.records import DriftFinding

    return DriftFinding(kind="latency", stage=stage_name, subject="all requests", metric="p95_ms",
                        started_at=T0 + 14 * 3600, start_offset_s=14 * 3600, start_hour=14, title=title,
                        evidence=[f"p95 per hour: 24.0, 24.1 ms {EVIL}", "Mann-Kendall z = 4.1"],
                        before=24.0, after=33.2, change_pct=38.0)


def test_drift_shows_next_to_the_stage_verdict_with_its_hour_and_evidence(tmp_path):
    from stampede.core.records import Drift

    stages = [stage("normal", 100)]
    result = run_result(stages, drift=Drift(stages=["normal"], interval_s=3600, findings=[_drift_finding()]))
    html = render(tmp_path, result)
    assert result.verdict == "pass" and "PASS" in html  # a warning: the verdict stands
    assert 'id="drift"' in html and "drift: 1</a>" in html
    assert "from hour 14 of normal" in html and "hour 14" in html and "Mann-Kendall z = 4.1" in html
    assert EVIL not in html  # evidence is escaped like every string of the run
    assert "Drift over time</b> (a warning; the verdict stands)" in html


def test_a_long_stage_without_drift_says_so_and_a_short_run_shows_no_drift_section(tmp_path):
    from stampede.core.records import Drift

    html = render(tmp_path, run_result([stage("normal", 100)], drift=Drift(stages=["normal"], interval_s=3600)))
    assert "No drift over normal" in html and "drift: " not in html
    for drift in (None, Drift(note="no judged stage was long enough (20 min at least) to show drift")):
        html = render(tmp_path, run_result([stage("normal", 100)], drift=drift))
        assert 'id="drift"' not in html and "long enough" not in html
