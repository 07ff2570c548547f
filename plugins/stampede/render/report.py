"""The HTML report of one run: one self-contained file, readable offline.

``render_report`` writes ``report.html`` (inline CSS, charts as inline SVG, no
network reference of any kind) and ``charts/*.png`` next to it. Every string
that comes from the run (stage and endpoint names, error messages, the target)
goes through Jinja's autoescaping; only the SVG that matplotlib wrote is
inserted as markup. Figures read as they do in Slack: both use :mod:`stampede.core.fmt`,
and the words for how the run ended :mod:`stampede.render.outcome`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jinja2

from stampede.analysis.comparison import Tolerance
from stampede.core import fmt, redact
from stampede.core.records import PhaseFigures, RunResult, StageResult, from_dict
from stampede.render.analysis_charts import render_analysis_charts
from stampede.render.charts import render_charts
from stampede.render.outcome import cleanup_problem, describe

__all__ = ["KeyFigures", "headline", "phases", "render_report"]

TEMPLATES = Path(__file__).parent / "templates"


def headline(result: RunResult) -> str:
    """The verdict in one line; never a bare PASS when the run left test data (or may have)."""
    judged = result.judged_stages
    if result.verdict == "pass":
        text = f"PASS: all {len(judged)} judged stages met their thresholds"
    elif result.verdict == "fail":
        failed = [s.name for s in judged if not s.passed]
        if failed:
            text = "FAIL: thresholds breached in " + ", ".join(failed)
        elif result.stopped is not None:
            text = f"FAIL: {describe(result.stopped.kind)}"
        else:
            text = "FAIL: thresholds breached in the run"
    else:
        text = "INVALID: this run's numbers cannot be trusted"
    problem = cleanup_problem(result.cleanup)
    if problem is None:
        return text
    if result.verdict == "pass":
        return f"{problem} — load test thresholds met"  # what was left first: never announced as a pass
    return f"{text} — and {problem}"


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
            stages_passed=sum(1 for s in stages if s.outcome == "pass"),
            stages=len(stages),
        )


def render_report(result: RunResult, out_dir: Path, *, server_document: Mapping[str, Any] | None = None) -> Path:
    """Write ``out_dir/report.html`` and ``out_dir/charts/*.png``; return the HTML path.

    :param server_document: the target's sampled metrics (``server_metrics.json``) for the
        server chart; the report reads no file of the run folder itself.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    charts = render_charts(result.series, result.stages, out_dir / "charts")
    analysis = {c.name: c for c in render_analysis_charts(result, server_document, out_dir / "charts")}
    problem = cleanup_problem(result.cleanup)
    html = _environment().get_template("report.html.j2").render(
        run=result,
        key=KeyFigures.of(result),
        headline=headline(result),
        banner="warn" if problem and result.verdict == "pass" else result.verdict,
        cleanup_problem=problem,
        reasons=_reasons(result),
        charts=charts,
        analysis_charts=analysis,
        target=redact.url(result.target),
        tolerance=from_dict(Tolerance, result.comparison.tolerance) if result.comparison else None,
    )
    path = out_dir / "report.html"
    partial = path.with_suffix(".html.tmp")
    partial.write_text(html, encoding="utf-8")
    partial.replace(path)
    return path


def _reasons(result: RunResult) -> list[str]:
    """Why the run is not a clean pass, in plain words, most important first."""
    reasons = []
    problem = cleanup_problem(result.cleanup)
    if problem:
        reasons.append(f"{problem} on the target: delete them by the run tag {result.run_tag or result.run_id}.")
    gen = result.generator
    if gen.delayed and gen.demand_max_pct <= gen.limit_pct:
        reasons.append(
            f"The load generator's event loop was late (p95 {fmt.num(gen.loop_lag_p95_ms, 1)} ms, limit "
            f"{fmt.num(gen.loop_lag_limit_ms, 0)} ms) while its CPU was under the limit: the latencies hold the "
            "generator's own delay. " + gen.advice[:1].upper() + gen.advice[1:] + "."
        )
    elif gen.saturated:
        reasons.append(
            f"The load generator was saturated (CPU peaked at {fmt.num(gen.cpu_max_pct, 0)} %, limit "
            f"{fmt.num(gen.limit_pct, 0)} %): the generator, not the target, was the limit."
            + (f" Use {fmt.count(gen.recommended_workers)} workers "
               f"({fmt.count(gen.recommended_workers - (gen.workers or 1))} more)." if gen.recommended_workers else "")
        )
    reasons += [f"Stage {s.name} is marked invalid." for s in result.stages if not s.valid]
    if result.aborted:
        stop = result.stopped
        why = f"{stop.reason} ({describe(stop.kind)})" if stop else "no reason recorded"
        reasons.append(f"The load was stopped before its planned end: {why}.")
    for b in result.breaches:
        reasons.append(
            f"Breach in {b.stage}: {fmt.label(b.metric)} observed {fmt.metric_value(b.metric, b.value)}, "
            f"threshold {fmt.metric_value(b.metric, b.threshold)}."
        )
    return reasons


def phases(stage: StageResult) -> list[tuple[str, PhaseFigures]]:
    """The parts of a stage that have figures: a ramp of 0 s that sent nothing is no part."""
    parts = (("ramp", stage.ramp), ("steady", stage.steady))
    return [(name, f) for name, f in parts if f is not None and (f.requests or f.duration_s > 0)]


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
        ms=fmt.ms, pct=fmt.pct, num=fmt.num, count=fmt.count, rps=fmt.rps, usd=fmt.usd, duration=fmt.duration,
        metric_value=lambda value, metric: fmt.metric_value(metric, value), label=fmt.label,
    )
    env.globals.update(check_text=fmt.check_text, phases=phases)
    return env
