"""Slack messages for a run: start, stage, abort, task failure and the final summary.

Each builder takes typed records (a :class:`~stampede.plan.run_plan.RunPlan`, a
:class:`~stampede.core.records.StageResult`, a whole
:class:`~stampede.core.records.RunResult`) and returns a :class:`Message`: a
plain-text fallback (what notifications and screen readers show) plus Block Kit
blocks. Nothing here talks to Slack: the callers post through
:class:`stampede.hooks.slack.StampedeSlackHook`.

Figures read as in the HTML report (:mod:`stampede.core.fmt`), and so do the
words for how a run ended (:mod:`stampede.render.outcome`). User-supplied text
is escaped for Slack (``&``, ``<``, ``>``: no surprise ``<!channel>`` pings) and
everything goes through :mod:`stampede.core.redact` before it leaves the process.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from stampede.core import fmt
from stampede.core.redact import text as redact_text, url as redact_url, value as redact_value
from stampede.core.records import Comparison, CostRecord, Finding, GeneratorHealth, RunResult, StageResult, Stop
from stampede.plan.run_plan import RunPlan
from stampede.render.outcome import cleanup_problem, describe

__all__ = [
    "Message",
    "abort_message",
    "failure_message",
    "stage_message",
    "start_message",
    "summary_message",
]

MAX_EXCEPTION_CHARS = 1500
MAX_SECTION_CHARS = 3000  # Slack's limit for a section's text
MAX_HEADER_CHARS = 150  # Slack's limit for a header's plain text
MAX_BLOCKS = 50  # Slack's limit per message

VERDICT_EMOJI = {"pass": ":white_check_mark:", "fail": ":x:", "invalid": ":warning:"}
OUTCOME_EMOJI = {"pass": ":white_check_mark:", "fail": ":x:", "invalid": ":warning:", "not run": ":white_circle:",
                 "reported": ":information_source:"}
OUTCOME_WORDS = {"pass": "passed", "fail": "failed", "invalid": "is invalid", "not run": "did not run",
                 "reported": "reported (it lowers the load: not judged)"}
CLEANUP_EMOJI = ":rotating_light:"


@dataclass(frozen=True)
class Message:
    """A Slack message: ``text`` is the fallback, ``blocks`` the Block Kit layout."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


# -- mrkdwn and Block Kit --------------------------------------------------------------------

def _esc(value: Any) -> str:
    """Escape user-supplied text for Slack mrkdwn (``&``, ``<``, ``>``)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _link(url: str | None, label: str) -> str:
    if not url:
        return label
    safe = str(url).replace("&", "&amp;").replace("<", "%3C").replace(">", "%3E").replace("|", "%7C")
    return f"<{safe}|{label}>"


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": _trim(text, MAX_HEADER_CHARS), "emoji": True}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _trim(text, MAX_SECTION_CHARS)}}


def _context(*parts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _trim(p, MAX_SECTION_CHARS)} for p in parts]}


def _message(text: str, blocks: list[dict[str, Any]]) -> Message:
    return Message(text=redact_text(text), blocks=redact_value(blocks[:MAX_BLOCKS]))


def _plural(n: int, word: str) -> str:
    return f"{fmt.count(n)} {word}{'' if n == 1 else 's'}"


# -- stage lines -----------------------------------------------------------------------------

def _check_lines(stage: StageResult) -> list[str]:
    """``p95 312 ms (must be &lt; 200 ms)`` for each check the stage breached."""
    return [_esc(fmt.check_text(c.metric, c.op, c.threshold, c.value)) for c in stage.failed_checks()]


def _stage_line(stage: StageResult) -> str:
    line = f"{OUTCOME_EMOJI[stage.outcome]} *{_esc(stage.name)}*: {fmt.stage_figures(stage)}"
    failing = _check_lines(stage)
    if failing:
        line += "\n" + "\n".join(f"      • breached: {c}" for c in failing)
    return line


# -- builders --------------------------------------------------------------------------------

def start_message(plan: RunPlan) -> Message:
    """The run is starting: scenarios, target, environment, peak users, planned duration, run id."""
    scenario = " → ".join(s.name for s in plan.scenarios)
    target, stages = redact_url(plan.target), plan.stages
    planned = f"{fmt.duration(plan.load_duration_s)} in {_plural(len(stages), 'stage')}"
    text = (
        f":rocket: Load test starting: {_esc(scenario)} on {_esc(plan.environment)} ({_esc(target)}), "
        f"peak {fmt.count(plan.peak_users)} users for {fmt.duration(plan.load_duration_s)}. Run {_esc(plan.run_id)}"
    )
    details = [
        f"*Scenario*: {_esc(scenario)}",
        f"*Target*: {_esc(target)} ({_esc(plan.environment)})",
        f"*Peak users*: {fmt.count(plan.peak_users)}",
        f"*Planned load*: {planned}",
    ]
    if plan.workers:
        details.append(f"*Workers*: {fmt.count(plan.workers)} ({_esc(plan.worker_provider)})")
    blocks = [
        _header(f":rocket: Load test starting: {scenario}"),
        _section("\n".join(details)),
        _context(f"Run `{_esc(plan.run_id)}`"),
    ]
    return _message(text, blocks)


def stage_message(stage: StageResult) -> Message:
    """One stage finished: its figures, and the checks it breached."""
    text = (f"{OUTCOME_EMOJI[stage.outcome]} Stage {_esc(stage.name)} {OUTCOME_WORDS[stage.outcome]}: "
            f"{fmt.stage_figures(stage)}")
    failing = _check_lines(stage)
    if failing:
        text += "; breached: " + "; ".join(failing)
    blocks = [
        _section(_stage_line(stage)),
        _context(f"{fmt.count(stage.requests)} requests, {fmt.count(stage.failures)} failed, "
                 f"over {fmt.duration(stage.duration_s)}"),
    ]
    return _message(text, blocks)


def abort_message(run_id: str, stop: Stop) -> Message:
    """The load was stopped before its planned end: why, what that kind of stop means, the breach if any."""
    why = f"{_esc(stop.reason)} ({_esc(describe(stop.kind))})"
    text = f":octagonal_sign: Load test stopped early (run {_esc(run_id)}): {why}"
    details = [f"*Why*: {why}"]
    if stop.breach is not None:
        b = stop.breach
        details.append(
            f"*Breach* in {_esc(b.stage)}: {_esc(fmt.label(b.metric))} {fmt.metric_value(b.metric, b.value)} over "
            f"{fmt.duration(b.window_s)} (threshold {fmt.metric_value(b.metric, b.threshold)})")
    blocks = [
        _header(":octagonal_sign: Load test stopped early"),
        _section("\n".join(details)),
        _context(f"Run `{_esc(run_id)}` · stop `{_esc(stop.kind)}`"),
    ]
    return _message(text, blocks)


def _exception_text(exception: Any) -> str:
    if exception is None:
        return "(no exception recorded)"
    if isinstance(exception, BaseException):
        detail = str(exception)
        text = f"{type(exception).__name__}: {detail}" if detail else type(exception).__name__
    else:
        text = str(exception)
    return _trim(redact_text(text.strip()), MAX_EXCEPTION_CHARS)


def failure_message(
    *, dag_id: str, task_id: str, run_id: str, log_url: str | None, exception: Any
) -> Message:
    """A task failed: where, which run, the (trimmed, masked) exception and a link to its log."""
    error = _exception_text(exception)
    text = f":boom: Task {_esc(dag_id)}.{_esc(task_id)} failed (run {_esc(run_id)}): {_esc(error)}"
    if log_url:
        text += f" {_link(log_url, 'Open the task log')}"
    code = error.replace("```", "'''")
    blocks = [
        _header(f":boom: Task failed: {dag_id}.{task_id}"),
        _section(f"```{_esc(code)}```"),
        _section(f"{_link(log_url, 'Open the task log')}" if log_url else "_No log link available._"),
        _context(f"DAG `{_esc(dag_id)}` · task `{_esc(task_id)}` · run `{_esc(run_id)}`"),
    ]
    return _message(text, blocks)


def _cleanup_line(result: RunResult) -> str:
    cleanup = result.cleanup
    left = fmt.count(cleanup.left) if cleanup.left is not None and cleanup.left >= 0 else "unknown"
    counts = f"{fmt.count(cleanup.created)} created, {fmt.count(cleanup.deleted)} deleted, {left} left"
    problem = cleanup_problem(cleanup)
    if problem is None:
        return f":broom: Cleanup: {counts}"
    line = f"{CLEANUP_EMOJI} *{_esc(problem)}* ({counts}): test data of this run may still be on the target; " \
           f"delete it by the run tag `{_esc(result.run_tag or result.run_id)}`"
    if cleanup.error:
        line += f". Cleanup failed: {_esc(cleanup.error)}"
    return line


def _generator_line(generator: GeneratorHealth) -> str:
    line = (f":warning: *Load generator saturated* (CPU max {fmt.num(generator.cpu_max_pct, 0)}%): "
            "latencies include the generator's own delay and are not trustworthy.")
    if generator.recommended_workers:
        line += (f" The load generator, not the target, was the limit: use "
                 f"{fmt.count(generator.recommended_workers)} workers "
                 f"({fmt.count(generator.recommended_workers - (generator.workers or 1))} more).")
    return line


def summary_message(result: RunResult, *, report_url: str | None) -> Message:
    """What test data was left first (if any), then the verdict, every stage's figures, cleanup and the report.

    :param report_url: Where the HTML report can be opened, if anywhere.
    """
    verdict, stages = result.verdict, result.stages
    emoji = VERDICT_EMOJI[verdict]
    target = redact_url(result.target)
    passed = sum(1 for s in stages if s.outcome == "pass")
    problem = cleanup_problem(result.cleanup)
    # a run that left test data (or cannot prove it left none) is never announced as a pass
    if problem is None:
        verdict_text = f"{emoji} Load test {verdict.upper()}"
    elif verdict == "pass":
        verdict_text = f"{CLEANUP_EMOJI} {problem} · load test thresholds met"
    else:
        verdict_text = f"{CLEANUP_EMOJI} {problem} · {emoji} Load test {verdict.upper()}"
    headline = f"{verdict_text}: {result.scenario}"

    lines: list[str] = []
    if verdict == "invalid":
        lines.append(":warning: *The run is invalid*: its figures cannot be trusted (see below).")
    if result.aborted:
        stop = result.stopped
        why = f"{_esc(stop.reason)} ({_esc(describe(stop.kind))})" if stop else "stopped before its planned end"
        lines.append(f":octagonal_sign: *Aborted early*: {why}")
    lines.append(f"*Target*: {_esc(target)} · {fmt.count(passed)}/{fmt.count(len(stages))} stages passed")

    blocks: list[dict[str, Any]] = [_header(headline)]
    if problem:
        blocks.append(_section(_cleanup_line(result)))  # what was left comes before the verdict's details
    blocks.append(_section("\n".join(lines)))
    if stages:
        blocks.append({"type": "divider"})
    room = MAX_BLOCKS - len(blocks) - 7  # keep room for generator, cleanup, cost, baseline, bottleneck, report, context
    shown = stages if len(stages) <= room else stages[: room - 1]
    blocks.extend(_section(_stage_line(s)) for s in shown)
    if len(shown) < len(stages):
        blocks.append(_context(f"…and {fmt.count(len(stages) - len(shown))} more stages in the report"))
    if not stages:
        blocks.append(_section("_No stage produced figures._"))

    generator = result.generator
    text_tail: list[str] = []
    if generator.saturated:
        blocks.append(_section(_generator_line(generator)))
        text_tail.append(f"generator saturated (CPU max {fmt.num(generator.cpu_max_pct, 0)}%)")
    if problem is None:
        blocks.append(_section(_cleanup_line(result)))
    if result.cost is not None and result.cost.provider != "local":
        cost_text = _cost_line(result.cost)
        blocks.append(_section(f":moneybag: {cost_text}"))
        text_tail.append(cost_text)
    for line in _analysis_lines(result.comparison, result.bottlenecks):
        blocks.append(_section(line))
        text_tail.append(re.sub(r"[*_`]|:[a-z_]+: ", "", line).split("\n")[0])
    blocks.append(_section(
        f":bar_chart: {_link(report_url, 'Open the report')}" if report_url else "_No report link available._"
    ))
    context = [f"Run `{_esc(result.run_id)}`"]
    if not generator.saturated:
        context.append(f"generator CPU max {fmt.num(generator.cpu_max_pct, 0)}%")
    blocks.append(_context(" · ".join(context)))

    stage_text = "; ".join(
        f"{_esc(s.name)} {s.outcome if s.outcome != 'fail' else 'FAIL'} "
        f"(p95 {fmt.ms(s.p95_ms)}, {fmt.rps(s.rps)}, errors {fmt.pct(s.error_rate)})"
        for s in stages
    )
    text = (f"{verdict_text}: {_esc(result.scenario)} on {_esc(target)}, "
            f"{fmt.count(passed)}/{fmt.count(len(stages))} stages passed")
    if result.aborted:
        text += f", aborted: {_esc(result.stopped.reason if result.stopped else 'stopped early')}"
    if stage_text:
        text += f". {stage_text}"
    if text_tail:
        text += ". " + "; ".join(text_tail)
    if report_url:
        text += f". {_link(report_url, 'Report')}"
    text += f". Run {_esc(result.run_id)}"
    return _message(text, blocks)


def _cost_line(cost: CostRecord) -> str:
    """``Cost: 0.42 USD actual (estimate 0.55 USD), 2 ecs workers fargate-0.5vcpu-1gb``."""
    spot = " spot" if cost.spot else ""
    return (
        f"Cost: {fmt.usd(cost.actual_usd)} actual (estimate {fmt.usd(cost.estimate_usd)}), "
        f"{fmt.count(cost.workers)} {_esc(cost.provider)}{spot} workers {_esc(cost.size)}"
    ).rstrip()


def _analysis_lines(comparison: Comparison | None, bottlenecks: list[Finding]) -> list[str]:
    """The baseline comparison and the top bottleneck, one section each (nothing when not analysed)."""
    lines = []
    if comparison is not None and comparison.baseline_run_id:
        verdict = comparison.verdict
        emoji = ":chart_with_upwards_trend:" if verdict == "regressed" else ":straight_ruler:"
        line = (f"{emoji} *Baseline*: {_esc(verdict.upper() if verdict == 'regressed' else verdict)} "
                f"vs run `{_esc(comparison.baseline_run_id)}`")
        if comparison.regressions:
            line += "\n" + "\n".join(
                f"      • regressed: *{_esc(r.endpoint)}* in {_esc(r.stage)}: {_esc(r.why)}"
                for r in comparison.regressions[:5])
        for stage in comparison.stages[:5]:
            if stage.baseline_p95_ms is not None and stage.p95_ms is not None:
                line += (f"\n      {_esc(stage.name)}: p95 {fmt.ms(stage.baseline_p95_ms)} → {fmt.ms(stage.p95_ms)}, "
                         f"{fmt.num(stage.baseline_rps)} → {fmt.rps(stage.rps)}")
        lines.append(line)
    elif comparison is not None and comparison.why:
        lines.append(f":straight_ruler: *Baseline*: {_esc(comparison.why)}")
    if bottlenecks:
        top = bottlenecks[0]
        evidence = top.evidence[0] if top.evidence else ""
        lines.append(f":mag: *Top bottleneck*: {_esc(top.title)}" + (f": {_esc(evidence)}" if evidence else ""))
    return lines
