"""The HTML report of one run: one self-contained file, readable offline.

``render_report`` writes ``report.html`` (inline CSS, charts as inline SVG, no
network reference of any kind) and ``charts/*.png`` next to it. Every string
that comes from the run (stage and endpoint names, error messages, the target)
goes through Jinja's autoescaping; only the SVG that matplotlib wrote is
inserted as markup.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

from stampede.render.charts import render_charts
from stampede.core.records import Check, RunResult, StageResult

__all__ = ["render_report", "KeyFigures"]

TEMPLATES = Path(__file__).parent / "templates"
STOP_KINDS = {
    "abort": "a threshold marked abort was breached", "kill_switch": "the kill switch was set",
    "target_unhealthy": "the target failed its health check between stages (it went down under load: a finding)",
    "allowed_hours": "the environment's allowed hours ended",
}


@dataclass(frozen=True)
class KeyFigures:
    """The few numbers the banner shows, over all stages of the run."""

    requests: int
    failures: int
    error_rate: float
    best_rps: float
    worst_p95_ms: float | None
    peak_users: int
    load_duration_s: float
    stages_passed: int
    stages: int

    @classmethod
    def of(cls, result: RunResult) -> KeyFigures:
        stages = result.stages
        requests = sum(s.requests for s in stages)
        failures = sum(s.failures for s in stages)
        p95s = [s.p95_ms for s in stages if s.p95_ms is not None]
        return cls(
            requests=requests,
            failures=failures,
            error_rate=failures / requests if requests else 0.0,
            best_rps=max((s.rps for s in stages), default=0.0),
            worst_p95_ms=max(p95s, default=None),
            peak_users=max((s.users for s in stages), default=0),
            load_duration_s=sum(s.duration_s for s in stages),
            stages_passed=sum(1 for s in stages if s.passed),
            stages=len(stages),
        )


def render_report(result: RunResult, out_dir: Path) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/charts/*.png``; return the HTML path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = render_charts(result.series, result.stages, out_dir / "charts")
    from stampede.render.analysis_charts import render_analysis_charts
    from stampede.figures.server import load as load_server_metrics

    analysis = {c.name: c for c in render_analysis_charts(result.to_dict(), load_server_metrics(out_dir), out_dir / "charts")}
    html = _environment().get_template("report.html.j2").render(
        run=result,
        key=KeyFigures.of(result),
        headline=_headline(result),
        reasons=_reasons(result),
        charts=charts,
        analysis_charts=analysis,
        target=_redact(result.target),
    )
    path = out_dir / "report.html"
    partial = path.with_suffix(".html.tmp")
    partial.write_text(html, encoding="utf-8")
    partial.replace(path)
    return path


def _headline(result: RunResult) -> str:
    if result.verdict == "pass":
        return f"PASS: all {len(result.stages)} stages met their thresholds"
    if result.verdict == "fail":
        failed = [s.name for s in result.stages if not s.passed]
        return "FAIL: thresholds breached in " + (", ".join(failed) or "the run")
    return "INVALID: this run's numbers cannot be trusted"


def _reasons(result: RunResult) -> list[str]:
    """Why the run is not a clean pass, in plain words, most important first."""
    reasons = []
    gen = result.generator
    if gen.saturated:
        reasons.append(
            f"The load generator was saturated (CPU peaked at {gen.cpu_max_pct:.0f} %, limit "
            f"{gen.limit_pct:.0f} %): the generator, not the target, was the limit."
            + (f" Use {gen.recommended_workers} workers ({gen.recommended_workers - (gen.workers or 1)} more)."
               if gen.recommended_workers else "")
        )
    reasons += [f"Stage {s.name} is marked invalid." for s in result.stages if not s.valid]
    if result.aborted:
        stopped = result.stopped or {}
        why = stopped.get("reason") or STOP_KINDS.get(stopped.get("kind", ""), "no reason recorded")
        reasons.append(f"The load was stopped before its planned end: {why}.")
    for b in result.breaches:
        reasons.append(
            f"Breach in {b.get('stage')}: {b.get('metric')} observed "
            f"{_metric_value(b.get('value'), b.get('metric', ''))}, threshold "
            f"{_metric_value(b.get('threshold'), b.get('metric', ''))}."
        )
    if result.cleanup.left or not result.cleanup.ok:
        reasons.append(f"Clean-up incomplete: {result.cleanup.left} test entities left on the target.")
    return reasons


def _redact(url: str) -> str:
    """The target as plain text, without any credentials written into it."""
    return re.sub(r"//[^/@\s]+@", "//***@", url)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        ms=_ms, pct=_pct, num=_num, duration=_duration, metric_value=_metric_value,
        stage_result=_stage_result,
    )
    env.globals["check_text"] = _check_text
    return env


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if value < 10 else f"{value:,.0f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.2%}"


def _num(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.1f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = round(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min" + (f" {s % 60} s" if s % 60 else "")
    return f"{s // 3600} h {s % 3600 // 60} min"


def _metric_value(value: float | None, metric: str) -> str:
    if value is None:
        return "–"
    if metric == "error_rate":
        return _pct(value)
    if metric.endswith("_ms"):
        return f"{_ms(value)} ms"
    if metric.endswith("rps"):
        return f"{value:,.1f} req/s"
    return f"{value:,.4g}"


def _check_text(check: Check) -> str:
    return f"{check.metric} {check.op} {_metric_value(check.threshold, check.metric)}"


def _stage_result(stage: StageResult) -> str:
    if not stage.valid:
        return "invalid"
    return "pass" if stage.passed else "fail"
