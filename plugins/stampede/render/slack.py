"""Slack messages for a run: start, stage, abort, task failure and the final summary.

Each builder takes plain dicts (a ``RunPlan.to_dict()``, a stage or a whole
``RunResult.to_dict()``) and returns a :class:`Message`: a plain-text fallback
(what notifications and screen readers show) plus Block Kit blocks. Nothing here
talks to Slack; :func:`task_failure_callback` is the one Airflow entry point, and
it sends through :class:`stampede.hooks.slack.StampedeSlackHook`.

User-supplied text is escaped for Slack (``&``, ``<``, ``>``: no surprise
``<!channel>`` pings) and everything is passed through :func:`redact` before it
leaves the process.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from stampede.core.paths import reports_root

__all__ = [
    "Message",
    "abort_message",
    "failure_message",
    "redact",
    "stage_message",
    "start_message",
    "summary_message",
    "task_failure_callback",
]

log = logging.getLogger("stampede.slack")

MASK = "***"
MAX_EXCEPTION_CHARS = 1500
MAX_SECTION_CHARS = 3000  # Slack's limit for a section's text
MAX_HEADER_CHARS = 150  # Slack's limit for a header's plain text
MAX_BLOCKS = 50  # Slack's limit per message

VERDICT_EMOJI = {"pass": ":white_check_mark:", "fail": ":x:", "invalid": ":warning:"}
PASS_EMOJI, FAIL_EMOJI = ":white_check_mark:", ":x:"


@dataclass(frozen=True)
class Message:
    """A Slack message: ``text`` is the fallback, ``blocks`` the Block Kit layout."""

    text: str
    blocks: list[dict[str, Any]] = field(default_factory=list)


# -- secrets -------------------------------------------------------------------------------

_SECRET_KEY = re.compile(
    r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key", re.IGNORECASE
)
# Every pattern starts at a word start (a negative lookbehind, not \b), so a long
# exception text is scanned in linear time.
_REDACTIONS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Slack tokens: xoxb-, xoxp-, xoxa-, xoxr-, xoxs-, xoxe(.xoxp)-, and app-level xapp-.
    (re.compile(r"(?<![\w-])(xox[abeoprs](?:\.xox[a-z])?|xapp)-[A-Za-z0-9-]+"), rf"\1-{MASK}"),
    # Authorization headers: Bearer <token>, Basic <base64>.
    (re.compile(r"(?<![\w-])(bearer)(\s+)[A-Za-z0-9._~+/=-]{6,}", re.IGNORECASE), rf"\1\2{MASK}"),
    (re.compile(r"(?<![\w-])(Basic)(\s+)[A-Za-z0-9+/]{8,}={0,2}"), rf"\1\2{MASK}"),
    # Credentials in URLs: scheme://user:password@host.
    (re.compile(r"(?<![\w+.-])([a-z][a-z0-9+.-]*://[^\s:/@]+:)[^\s@/]+@", re.IGNORECASE), rf"\1{MASK}@"),
)
# key=value, key: value, "key": "value" where the key names a secret (password, db_password, api_key...).
_KEY = re.compile(r"""(?<![\w.-])(["']?)([\w.-]+)\1\s*[=:]\s*""")
_BARE_VALUE = re.compile(r"""[^\s&,;'"`|<>()\[\]{}]+""")


def _mask_pairs(text: str) -> str:
    out, pos = [], 0
    for match in _KEY.finditer(text):
        start = match.end()
        if start < pos or not _SECRET_KEY.search(match.group(2)):
            continue
        if start < len(text) and text[start] in "\"'":
            close = text.find(text[start], start + 1)
            if close >= 0:
                value_start, value_end = start + 1, close
            else:  # unterminated: mask up to the next separator
                value = _BARE_VALUE.match(text, start + 1)
                if value is None:
                    continue
                value_start, value_end = value.span()
        else:
            value = _BARE_VALUE.match(text, start)
            if value is None:
                continue
            value_start, value_end = value.span()
        if text[value_start:value_end] in ("", MASK):
            continue
        out.append(text[pos:value_start])
        out.append(MASK)
        pos = value_end
    out.append(text[pos:])
    return "".join(out)


def redact(text: str) -> str:
    """Mask what looks like a secret: bearer tokens, Slack tokens, ``password=...`` pairs."""
    if not text:
        return text
    for pattern, replacement in _REDACTIONS:
        text = pattern.sub(replacement, text)
    return _mask_pairs(text)


# -- formatting helpers --------------------------------------------------------------------

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


def _number(value: Any, render: Callable[[float], str]) -> str:
    """``render`` of the value as a number; a dash for none, the escaped text for what is not a number."""
    if value is None:
        return "–"
    try:
        value = float(value)
    except (TypeError, ValueError):
        return _esc(value)
    return render(value)


def _num(value: Any, digits: int = 1) -> str:
    return _number(value, lambda v: f"{v:,.{digits}f}")


def _ms(value: Any) -> str:
    return _number(value, lambda v: f"{v:,.1f} ms" if v < 10 else f"{v:,.0f} ms")


def _pct(value: Any) -> str:
    if value is None:
        return "–"
    try:
        return f"{float(value) * 100:.2f}%"
    except (TypeError, ValueError):
        return _esc(value)


def _users(value: Any) -> str:
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "–"


def _duration(seconds: Any) -> str:
    try:
        total = int(round(float(seconds)))
    except (TypeError, ValueError):
        return "–"
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def _metric_value(metric: str, value: Any) -> str:
    if metric.endswith("_ms"):
        return _ms(value)
    if metric == "error_rate":
        return _pct(value)
    if metric.endswith("rps"):
        return f"{_num(value)} req/s"
    return _num(value, 3)


_METRIC_LABELS = {"p50_ms": "p50", "p95_ms": "p95", "p99_ms": "p99", "error_rate": "errors", "min_rps": "req/s"}


def _check_line(check: Mapping[str, Any]) -> str:
    """``p95 312 ms (must be < 200 ms)``."""
    metric = str(check.get("metric", "?"))
    label = _METRIC_LABELS.get(metric, metric)
    return (
        f"{_esc(label)} {_metric_value(metric, check.get('value'))} "
        f"(must be {_esc(check.get('op', '?'))} {_metric_value(metric, check.get('threshold'))})"
    )


def _failing_checks(stage: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [c for c in stage.get("checks") or [] if not c.get("passed", True)]


def _stage_figures(stage: Mapping[str, Any]) -> str:
    return (
        f"{_users(stage.get('users'))} users · {_num(stage.get('rps'))} req/s · "
        f"p50 {_ms(stage.get('p50_ms'))} · p95 {_ms(stage.get('p95_ms'))} · p99 {_ms(stage.get('p99_ms'))} · "
        f"errors {_pct(stage.get('error_rate'))}"
    )


def _stage_passed(stage: Mapping[str, Any]) -> bool:
    return bool(stage.get("passed", not _failing_checks(stage)))


def _stage_line(stage: Mapping[str, Any]) -> str:
    passed = _stage_passed(stage)
    line = f"{PASS_EMOJI if passed else FAIL_EMOJI} *{_esc(stage.get('name', '?'))}*: {_stage_figures(stage)}"
    failing = _failing_checks(stage)
    if failing:
        line += "\n" + "\n".join(f"      • breached: {_check_line(c)}" for c in failing)
    return line


def _header(text: str) -> dict[str, Any]:
    return {"type": "header", "text": {"type": "plain_text", "text": _trim(text, MAX_HEADER_CHARS), "emoji": True}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _trim(text, MAX_SECTION_CHARS)}}


def _context(*parts: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": _trim(p, MAX_SECTION_CHARS)} for p in parts]}


def _message(text: str, blocks: list[dict[str, Any]]) -> Message:
    return Message(text=redact(text), blocks=_redact_blocks(blocks[:MAX_BLOCKS]))


def _redact_blocks(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [_redact_blocks(v) for v in value]
    if isinstance(value, dict):
        return {k: _redact_blocks(v) for k, v in value.items()}
    return value


# -- builders ------------------------------------------------------------------------------

def start_message(plan: Mapping[str, Any]) -> Message:
    """The run is starting: scenarios, target, environment, peak users, planned duration, run id.

    :param plan: A ``RunPlan.to_dict()``; a top-level ``stages`` list (the planned stages) and
        ``peak_users`` / ``duration_s`` keys, if present, win over the scenarios' own stages.
    """
    scenarios: Sequence[Mapping[str, Any]] = plan.get("scenarios") or []
    names = [str(s.get("name", "?")) for s in scenarios] or [str(plan.get("scenario", "?"))]
    stages = plan.get("stages") or [st for s in scenarios for st in s.get("stages") or []]
    peak = plan.get("peak_users") or max((int(st.get("users", 0)) for st in stages), default=0)
    duration = plan.get("duration_s") or sum(float(st.get("duration_s", 0)) for st in stages)
    scenario, target = " → ".join(names), str(plan.get("target", "?"))
    environment, run_id = str(plan.get("environment", "?")), str(plan.get("run_id", "?"))
    text = (
        f":rocket: Load test starting: {_esc(scenario)} on {_esc(environment)} ({_esc(target)}), "
        f"peak {_users(peak)} users for {_duration(duration)}. Run {_esc(run_id)}"
    )
    details = [
        f"*Scenario*: {_esc(scenario)}",
        f"*Target*: {_esc(target)} ({_esc(environment)})",
        f"*Peak users*: {_users(peak)}",
        f"*Planned load*: {_duration(duration)} in {len(stages)} stage{'s' if len(stages) != 1 else ''}",
    ]
    if plan.get("workers"):
        details.append(f"*Workers*: {_users(plan['workers'])}")
    blocks = [
        _header(f":rocket: Load test starting: {scenario}"),
        _section("\n".join(details)),
        _context(f"Run `{_esc(run_id)}`"),
    ]
    return _message(text, blocks)


def stage_message(stage: Mapping[str, Any]) -> Message:
    """One stage finished: its figures, and the checks it breached.

    :param stage: One entry of ``RunResult.to_dict()["stages"]``.
    """
    passed = _stage_passed(stage)
    name = str(stage.get("name", "?"))
    verdict = "passed" if passed else "failed"
    text = f"{PASS_EMOJI if passed else FAIL_EMOJI} Stage {_esc(name)} {verdict}: {_stage_figures(stage)}"
    failing = _failing_checks(stage)
    if failing:
        text += "; breached: " + "; ".join(_check_line(c) for c in failing)
    context = []
    if stage.get("requests") is not None:
        context.append(f"{_users(stage.get('requests'))} requests, {_users(stage.get('failures'))} failed")
    if stage.get("duration_s") is not None:
        context.append(f"over {_duration(stage.get('duration_s'))}")
    blocks = [_section(_stage_line(stage))]
    if context:
        blocks.append(_context(", ".join(context)))
    return _message(text, blocks)


def abort_message(run_id: str, reason: str) -> Message:
    """The load was stopped before its planned end (abort threshold, kill switch, operator)."""
    text = f":octagonal_sign: Load test aborted (run {_esc(run_id)}): {_esc(reason)}"
    blocks = [
        _header(":octagonal_sign: Load test aborted"),
        _section(f"*Why*: {_esc(reason)}"),
        _context(f"Run `{_esc(run_id)}`"),
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
    text = redact(text.strip())
    if len(text) > MAX_EXCEPTION_CHARS:
        text = text[: MAX_EXCEPTION_CHARS - 1] + "…"
    return text


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


def _cleanup_line(cleanup: Mapping[str, Any]) -> tuple[str, bool]:
    """(line, loud): loud when entities were left behind or cleanup itself failed."""
    created, deleted, left = cleanup.get("created", 0), cleanup.get("deleted", 0), cleanup.get("left", 0)
    ok = cleanup.get("ok", True)
    counts = f"{_users(created)} created, {_users(deleted)} deleted, {_users(left)} left"
    try:
        left_n = int(left or 0)
    except (TypeError, ValueError):
        left_n = 1
    if left_n > 0 or not ok:
        line = f":rotating_light: *CLEANUP INCOMPLETE*: {counts}"
        if left_n > 0:
            line += f". *{_users(left_n)} test entities are still on the target*; delete them by the run tag"
        if not ok:
            line += f". Cleanup failed: {_esc(cleanup.get('error') or 'unknown error')}"
        return line, True
    return f":broom: Cleanup: {counts}", False


def summary_message(results: Mapping[str, Any], *, report_url: str | None) -> Message:
    """The run's verdict first, then every stage's figures, generator health, cleanup and the report.

    :param results: A ``RunResult.to_dict()`` (results.json).
    :param report_url: Where the HTML report can be opened, if anywhere.
    """
    verdict = str(results.get("verdict", "invalid"))
    emoji = VERDICT_EMOJI.get(verdict, ":grey_question:")
    scenario, target = str(results.get("scenario", "?")), str(results.get("target", "?"))
    run_id = str(results.get("run_id", "?"))
    stages: Sequence[Mapping[str, Any]] = results.get("stages") or []
    passed = sum(1 for s in stages if _stage_passed(s))
    headline = f"{emoji} Load test {verdict.upper()}: {scenario}"

    lines: list[str] = []
    if verdict == "invalid":
        lines.append(":warning: *The run is invalid*: its figures cannot be trusted (see below).")
    stopped = results.get("stopped") or {}
    if results.get("aborted"):
        why = stopped.get("reason") or "stopped before its planned end"
        kind = f" ({_esc(stopped['kind'])})" if stopped.get("kind") else ""
        lines.append(f":octagonal_sign: *Aborted early*{kind}: {_esc(why)}")
    lines.append(f"*Target*: {_esc(target)} · {passed}/{len(stages)} stages passed")

    blocks: list[dict[str, Any]] = [_header(headline), _section("\n".join(lines))]
    if stages:
        blocks.append({"type": "divider"})
    room = MAX_BLOCKS - len(blocks) - 6  # keep room for generator, cleanup, cost, report, context
    shown = stages if len(stages) <= room else stages[: room - 1]
    blocks.extend(_section(_stage_line(s)) for s in shown)
    if len(shown) < len(stages):
        blocks.append(_context(f"…and {len(stages) - len(shown)} more stages in the report"))
    if not stages:
        blocks.append(_section("_No stage produced figures._"))

    generator = results.get("generator") or {}
    text_tail: list[str] = []
    if generator.get("saturated"):
        gen_line = (
            f":warning: *Load generator saturated* (CPU max {_num(generator.get('cpu_max_pct'), 0)}%): "
            "latencies include the generator's own delay and are not trustworthy."
        )
        if generator.get("recommended_workers"):
            gen_line += (
                f" The load generator, not the target, was the limit: use {generator['recommended_workers']} workers"
                f" ({generator['recommended_workers'] - (generator.get('workers') or 1)} more)."
            )
        blocks.append(_section(gen_line))
        text_tail.append(f"generator saturated (CPU max {_num(generator.get('cpu_max_pct'), 0)}%)")
    cleanup = results.get("cleanup") or {}
    cleanup_line, loud = _cleanup_line(cleanup)
    blocks.append(_section(cleanup_line))
    if loud:
        text_tail.append(f"CLEANUP INCOMPLETE ({_users(cleanup.get('left', 0))} left)")
    cost = results.get("cost") or {}
    if cost.get("provider") not in (None, "local"):
        cost_text = _cost_line(cost)
        blocks.append(_section(f":moneybag: {cost_text}"))
        text_tail.append(cost_text)
    for line in _analysis_lines(results):  # baseline comparison and top bottleneck (stampede.steps.analyse)
        blocks.append(_section(line))
        text_tail.append(re.sub(r"[*_`]|:[a-z_]+: ", "", line).split("\n")[0])
    blocks.append(_section(
        f":bar_chart: {_link(report_url, 'Open the report')}" if report_url else "_No report link available._"
    ))
    context = [f"Run `{_esc(run_id)}`"]
    if generator and not generator.get("saturated") and generator.get("cpu_max_pct") is not None:
        context.append(f"generator CPU max {_num(generator.get('cpu_max_pct'), 0)}%")
    blocks.append(_context(" · ".join(context)))

    stage_text = "; ".join(
        f"{_esc(s.get('name', '?'))} {'pass' if _stage_passed(s) else 'FAIL'} "
        f"(p95 {_ms(s.get('p95_ms'))}, {_num(s.get('rps'))} req/s, errors {_pct(s.get('error_rate'))})"
        for s in stages
    )
    text = (
        f"{emoji} Load test {verdict.upper()}: {_esc(scenario)} on {_esc(target)}, "
        f"{passed}/{len(stages)} stages passed"
    )
    if results.get("aborted"):
        text += f", aborted: {_esc(stopped.get('reason') or 'stopped early')}"
    if stage_text:
        text += f". {stage_text}"
    if text_tail:
        text += ". " + "; ".join(text_tail)
    if report_url:
        text += f". {_link(report_url, 'Report')}"
    text += f". Run {_esc(run_id)}"
    return _message(text, blocks)


def _cost_line(cost: Mapping[str, Any]) -> str:
    """``Cost: 0.42 USD actual (estimate 0.55 USD), 2 ecs workers fargate-0.5vcpu-1gb``."""
    def usd(value: Any) -> str:
        if value is None:
            return "–"
        return f"{_num(value, 2 if abs(float(value)) >= 1 else 4)} USD"  # cents hide a short run's cost

    spot = " spot" if cost.get("spot") else ""
    return (
        f"Cost: {usd(cost.get('actual_usd'))} actual (estimate {usd(cost.get('estimate_usd'))}), "
        f"{_users(cost.get('workers'))} {_esc(cost.get('provider', '?'))}{spot} workers {_esc(cost.get('size', ''))}"
    ).rstrip()


def _analysis_lines(results: Mapping[str, Any]) -> list[str]:
    """The baseline comparison and the top bottleneck, one section each (nothing when not analysed)."""
    lines = []
    comparison = results.get("comparison") or {}
    if comparison.get("baseline_run_id"):
        verdict = str(comparison.get("verdict", "?"))
        emoji = ":chart_with_upwards_trend:" if verdict == "regressed" else ":straight_ruler:"
        line = f"{emoji} *Baseline*: {_esc(verdict.upper() if verdict == 'regressed' else verdict)} vs run `{_esc(comparison['baseline_run_id'])}`"
        regressions = comparison.get("regressions") or []
        if regressions:
            line += "\n" + "\n".join(
                f"      • regressed: *{_esc(r.get('endpoint'))}* in {_esc(r.get('stage'))}: {_esc(r.get('why', ''))}"
                for r in regressions[:5])
        for stage in (comparison.get("stages") or [])[:5]:
            if stage.get("baseline_p95_ms") is not None and stage.get("p95_ms") is not None:
                line += (f"\n      {_esc(stage.get('name'))}: p95 {_ms(stage['baseline_p95_ms'])} → {_ms(stage['p95_ms'])}, "
                         f"{_num(stage.get('baseline_rps'))} → {_num(stage.get('rps'))} req/s")
        lines.append(line)
    elif comparison.get("why"):
        lines.append(f":straight_ruler: *Baseline*: {_esc(comparison['why'])}")
    bottlenecks = results.get("bottlenecks") or []
    if bottlenecks:
        top = bottlenecks[0]
        evidence = (top.get("evidence") or [""])[0]
        lines.append(f":mag: *Top bottleneck*: {_esc(top.get('title', '?'))}" + (f": {_esc(evidence)}" if evidence else ""))
    return lines


# -- Airflow callback ----------------------------------------------------------------------

def _attr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # a property (log_url reads Airflow config) must not break the callback
        return None


def task_failure_callback(context: Mapping[str, Any]) -> None:
    """Airflow ``on_failure_callback`` for tasks: post :func:`failure_message` to Slack.

    Never raises: a Slack problem must not hide the task's own failure. Without a
    Slack configuration the message goes to the log and to
    ``$STAMPEDE_REPORTS_DIR/slack_messages.jsonl``.
    """
    try:
        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        message = failure_message(
            dag_id=str(_attr(ti, "dag_id") or _attr(dag_run, "dag_id") or context.get("dag_id") or "?"),
            task_id=str(_attr(ti, "task_id") or context.get("task_id") or "?"),
            run_id=str(_attr(dag_run, "run_id") or _attr(ti, "run_id") or context.get("run_id") or "?"),
            log_url=_attr(ti, "log_url"),
            exception=context.get("exception"),
        )
        from stampede.hooks.slack import StampedeSlackHook

        hook = StampedeSlackHook(fallback_dir=reports_root())
        hook.post_message(text=message.text, blocks=message.blocks)
    except Exception as exc:  # the callback must never raise (see docstring)
        log.warning("Slack failure notification not sent: %s", redact(f"{type(exc).__name__}: {exc}"))
