"""Slack messages for a run's thread: start (the parent), stage and abort replies, alerts and the summary.

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

Every message fits Slack's Block Kit limits by construction (:func:`_message` trims what could exceed
them): at most 50 blocks, 3,000 characters per section, 150 per header, one table of at most 100 rows
and 20 cells, and an aggregate text budget below the ~13,000 characters at which Slack answers
``msg_blocks_too_long`` (an undocumented limit; slackapi/bolt-js#2509). The summary shows the figures per
stage as a table block and carries three buttons (:data:`ACTION_OPEN_REPORT`, :data:`ACTION_RERUN`,
:data:`ACTION_PIN`) whose values :func:`button_value` writes and :func:`parse_button_value` reads: the
interactivity endpoint (``plugins/stampede_slack_actions.py``) acts on them.
"""

from __future__ import annotations

import re
import json
from dataclasses import dataclass, field
from typing import Any

from stampede.core import fmt
from stampede.core.redact import text as redact_text, url as redact_url, value as redact_value
from stampede.core.records import (Comparison, CostRecord, Drift, Finding, GeneratorHealth, RunResult, StageResult,
                                    Stop)
from stampede.plan.run_plan import RunPlan
from stampede.render.outcome import cleanup_problem, describe

__all__ = [
    "ACTION_OPEN_REPORT",
    "ACTION_PIN",
    "ACTION_RERUN",
    "ButtonValue",
    "Message",
    "abort_message",
    "action_reply",
    "button_value",
    "failure_message",
    "late_message",
    "parse_button_value",
    "refusal_message",
    "stage_message",
    "start_message",
    "summary_broadcast",
    "summary_message",
    "timed_out_message",
    "with_status",
]

MAX_EXCEPTION_CHARS = 1500
MAX_SECTION_CHARS = 3000  # Slack's limit for a section's text
MAX_HEADER_CHARS = 150  # Slack's limit for a header's plain text
MAX_BLOCKS = 50  # Slack's limit per message
MAX_TABLE_ROWS = 100  # Slack's limit per table (the header row included)
MAX_BUTTON_VALUE = 2000
BLOCKS_TEXT_BUDGET = 11_000  # below the ~13,000 characters of text at which Slack answers msg_blocks_too_long
ACTIONS_BLOCK_ID = "stampede_summary_actions"
ACTION_OPEN_REPORT = "stampede_open_report"
ACTION_RERUN = "stampede_rerun"
ACTION_PIN = "stampede_pin_baseline"

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


def _text_size(value: Any) -> int:
    """The characters of text in blocks, as Slack counts them toward its aggregate limit."""
    if isinstance(value, dict):
        return sum(len(v) if k == "text" and isinstance(v, str) else _text_size(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_text_size(v) for v in value)
    return 0


def _fit(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks within Slack's limits: 50 at most (the last one, the run's context, kept), one table, and a
    text budget kept by shortening the longest sections (builders with a table shorten it first)."""
    blocks = [dict(b) for b in blocks]
    if len(blocks) > MAX_BLOCKS:
        blocks = blocks[: MAX_BLOCKS - 1] + blocks[-1:]
    tables = [i for i, b in enumerate(blocks) if b["type"] == "table"]
    for extra in reversed(tables[1:]):
        del blocks[extra]
    while (over := _text_size(blocks) - BLOCKS_TEXT_BUDGET) > 0:
        longest = max((b for b in blocks if b["type"] == "section"), key=lambda b: len(b["text"]["text"]), default=None)
        if longest is None or len(longest["text"]["text"]) <= 200:
            break
        text = longest["text"]["text"]
        longest["text"] = {**longest["text"], "text": _trim(text, max(200, len(text) - over))}
    return blocks


def _message(text: str, blocks: list[dict[str, Any]]) -> Message:
    return Message(text=redact_text(text), blocks=redact_value(_fit(blocks)))


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


def _cell(text: Any) -> dict[str, str]:
    return {"type": "raw_text", "text": str(text)}


TABLE_COLUMNS = ("Stage", "Users", "Req/s", "p50 ms", "p95 ms", "p99 ms", "Errors", "Result")


def _stage_table(stages: list[StageResult], max_rows: int = MAX_TABLE_ROWS) -> dict[str, Any]:
    """The figures per stage as one table block: a header row, a row per stage, at most ``max_rows`` rows
    (the last one then says how many more stages the report has)."""
    rows = [[_cell(c) for c in TABLE_COLUMNS]]
    shown = stages if len(stages) < max_rows else stages[: max_rows - 2]
    for s in shown:
        rows.append([_cell(s.name), _cell(fmt.count(s.users)), _cell(fmt.num(s.rps)),
                     _cell(fmt.ms(s.p50_ms, unit=False)), _cell(fmt.ms(s.p95_ms, unit=False)),
                     _cell(fmt.ms(s.p99_ms, unit=False)), _cell(fmt.pct(s.error_rate)),
                     _cell(s.outcome.upper() if s.outcome == "fail" else s.outcome)])
    if len(shown) < len(stages):
        hidden = len(stages) - len(shown)
        rows.append([_cell(f"… {fmt.count(hidden)} more stages in the report")] + [_cell("") for _ in TABLE_COLUMNS[1:]])
    return {"type": "table", "rows": rows,
            "column_settings": [{"is_wrapped": True}] + [{"align": "right"} for _ in TABLE_COLUMNS[1:-1]]
            + [{"align": "left"}]}


# -- buttons ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ButtonValue:
    """What a summary button acts on: the Airflow DAG run the summary reports."""

    dag_id: str
    run_id: str


def button_value(dag_id: str, run_id: str) -> str:
    """The ``value`` of the re-run and pin buttons (JSON; Slack allows 2,000 characters)."""
    value = json.dumps({"dag_id": dag_id, "run_id": run_id}, separators=(",", ":"))
    if len(value) > MAX_BUTTON_VALUE:
        raise ValueError(f"button value: {len(value)} characters, Slack allows {MAX_BUTTON_VALUE}")
    return value


def parse_button_value(value: str | None) -> ButtonValue:
    """:func:`button_value`'s JSON read back; ``ValueError`` for anything else."""
    try:
        data = json.loads(value or "")
        return ButtonValue(dag_id=str(data["dag_id"]), run_id=str(data["run_id"]))
    except (TypeError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"not a Stampede button value: {value!r}") from exc


def _button(text: str, action_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": text, "emoji": True}, "action_id": action_id,
            **extra}


def _confirm(title: str, text: str, confirm: str) -> dict[str, Any]:
    return {"title": {"type": "plain_text", "text": title}, "text": {"type": "mrkdwn", "text": text},
            "confirm": {"type": "plain_text", "text": confirm}, "deny": {"type": "plain_text", "text": "Cancel"}}


def _actions(result: RunResult, report_url: str | None, dag_id: str | None) -> dict[str, Any] | None:
    """Open the report (an http(s) report only: Slack refuses other links), re-run, pin as the baseline."""
    buttons = []
    if report_url and str(report_url).startswith(("http://", "https://")):
        buttons.append(_button(":bar_chart: Open the report", ACTION_OPEN_REPORT, url=str(report_url)))
    if dag_id:
        value = button_value(dag_id, result.run_id)
        buttons.append(_button(":repeat: Re-run this scenario", ACTION_RERUN, value=value, style="primary",
                               confirm=_confirm("Re-run the load test?",
                                                f"This starts {_esc(dag_id)} again with the same settings "
                                                f"({_esc(result.scenario)} on {_esc(redact_url(result.target))}).",
                                                "Re-run")))
        buttons.append(_button(":pushpin: Pin as baseline", ACTION_PIN, value=value,
                               confirm=_confirm("Pin this run as the baseline?",
                                                f"Later runs of {_esc(result.scenario)} on this target are compared "
                                                f"with run `{_esc(result.run_id)}` until someone pins another.",
                                                "Pin")))
    if not buttons:
        return None
    return {"type": "actions", "block_id": ACTIONS_BLOCK_ID, "elements": buttons}


# -- builders --------------------------------------------------------------------------------

def start_message(plan: RunPlan) -> Message:
    """The run is starting (the thread's parent): scenarios, target, environment, peak users, duration, run id."""
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
        _context(f"Run `{_esc(plan.run_id)}` · each stage's figures follow in this thread as it ends"),
    ]
    return _message(text, blocks)


def with_status(message: Message, status: str) -> Message:
    """``message`` (the thread's parent) with a status line on top: what became of the run, for the channel."""
    text = f"{status}: {message.text}"
    blocks = [_section(status)] + [b for b in message.blocks if b.get("block_id") != "stampede_status"]
    blocks[0] = {**blocks[0], "block_id": "stampede_status"}
    return Message(text=redact_text(text), blocks=redact_value(_fit(blocks)))


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


def stage_ended_message(stage: StageResult) -> Message:
    """A stage ended while the run goes on: its figures now; the reply is replaced by its verdict later."""
    text = f":checkered_flag: Stage {_esc(stage.name)} ended: {fmt.stage_figures(stage)} (judged when the run ends)"
    blocks = [
        _section(f":checkered_flag: *{_esc(stage.name)}*: {fmt.stage_figures(stage)}"),
        _context(f"{fmt.count(stage.requests)} requests, {fmt.count(stage.failures)} failed, "
                 f"over {fmt.duration(stage.duration_s)} · judged when the run ends"),
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
    """A task failed for a reason of its own: where, which run, the (trimmed, masked) exception, its log."""
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


def refusal_message(*, dag_id: str, run_id: str, reason: str, log_url: str | None = None) -> Message:
    """The run was refused before any load was sent: the one message a refused run produces, and why."""
    why = _trim(redact_text(str(reason).strip()), MAX_EXCEPTION_CHARS)
    text = f":no_entry: Load test refused ({_esc(dag_id)}, run {_esc(run_id)}): {_esc(why)}. No load was sent."
    blocks = [
        _header(f":no_entry: Load test refused: {dag_id}"),
        _section(f"*Why*: {_esc(why)}\nNo load was sent; nothing was started."),
        _context(f"DAG `{_esc(dag_id)}` · run `{_esc(run_id)}`"
                 + (f" · {_link(log_url, 'task log')}" if log_url else "")),
    ]
    return _message(text, blocks)


def timed_out_message(*, dag_id: str, run_id: str, timeout: str, run_tag: str | None) -> Message:
    """Airflow stopped a run that outlived its ``dagrun_timeout``: teardown tasks were skipped with the rest."""
    tag = f" Test data and workers of this run may be left: the hourly reaper removes what carries the tag " \
          f"`{_esc(run_tag)}`." if run_tag else ""
    text = f":hourglass: Load test run timed out after {_esc(timeout)} ({_esc(dag_id)}, run {_esc(run_id)}).{tag}"
    blocks = [
        _header(f":hourglass: Load test timed out: {dag_id}"),
        _section(f"The run outlived its time limit ({_esc(timeout)}); Airflow stopped its tasks, cleanup and "
                 f"teardown included.{tag}"),
        _context(f"DAG `{_esc(dag_id)}` · run `{_esc(run_id)}`"),
    ]
    return _message(text, blocks)


def late_message(*, dag_id: str, run_id: str, queued_at: str | None, deadline: str | None) -> Message:
    """A run is still going past its deadline (a deadline alert): nothing has failed yet, someone should look."""
    text = (f":turtle: Load test run is late ({_esc(dag_id)}, run {_esc(run_id)}): still running past its deadline "
            f"{_esc(deadline or '?')} (queued {_esc(queued_at or '?')}).")
    blocks = [
        _header(f":turtle: Load test run is late: {dag_id}"),
        _section(f"Still running past its deadline *{_esc(deadline or '?')}* (queued {_esc(queued_at or '?')}): "
                 "slower than this DAG's recent successful runs. It will be stopped at its time limit."),
        _context(f"DAG `{_esc(dag_id)}` · run `{_esc(run_id)}`"),
    ]
    return _message(text, blocks)


def action_reply(text: str) -> Message:
    """The answer to a button press (posted to the click's response URL)."""
    return _message(text, [_section(text)])


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
    why = (f"event loop {fmt.num(generator.loop_lag_p95_ms, 1)} ms late at p95"
           if generator.delayed and generator.demand_max_pct <= generator.limit_pct
           else f"CPU max {fmt.num(generator.cpu_max_pct, 0)}%")
    line = (f":warning: *Load generator saturated* ({why}): "
            "latencies include the generator's own delay and are not trustworthy.")
    if generator.recommended_workers:
        line += (f" The load generator, not the target, was the limit: use "
                 f"{fmt.count(generator.recommended_workers)} workers "
                 f"({fmt.count(generator.recommended_workers - (generator.workers or 1))} more).")
    return line


def _headline(result: RunResult) -> str:
    """The verdict for people; a run that left test data (or cannot prove it left none) never reads as a pass."""
    emoji = VERDICT_EMOJI[result.verdict]
    problem = cleanup_problem(result.cleanup)
    if problem is None:
        return f"{emoji} Load test {result.verdict.upper()}"
    if result.verdict == "pass":
        return f"{CLEANUP_EMOJI} {problem} · load test thresholds met"
    return f"{CLEANUP_EMOJI} {problem} · {emoji} Load test {result.verdict.upper()}"


def summary_message(result: RunResult, *, report_url: str | None, dag_id: str | None = None,
                    delivery_note: str | None = None) -> Message:
    """What test data was left first (if any), then the verdict, the figures per stage as a table, the
    breached checks, cleanup, cost, the baseline comparison, the top bottleneck and the buttons.

    :param report_url: Where the HTML report can be opened, if anywhere.
    :param dag_id: The Airflow DAG of the run: with it the summary gets the re-run and pin buttons.
    :param delivery_note: A line (mrkdwn, already escaped) saying which messages did not reach Slack, if any.
    """
    verdict, stages = result.verdict, result.stages
    target = redact_url(result.target)
    passed = sum(1 for s in stages if s.outcome == "pass")
    problem = cleanup_problem(result.cleanup)
    verdict_text = _headline(result)
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
        blocks.append({"type": "table"})  # placeholder: sized below, once the rest of the message is known
        breaches = [f"{OUTCOME_EMOJI[s.outcome]} *{_esc(s.name)}* breached: " + "; ".join(_check_lines(s))
                    for s in stages if s.failed_checks()]
        if breaches:
            blocks.append(_section("\n".join(breaches)))
    else:
        blocks.append(_section("_No stage produced figures._"))
    text_tail: list[str] = []
    drift = _drift_line(result.drift)
    if drift:  # next to the stages' verdicts: what only time showed
        blocks.append(_section(drift))
        first = result.drift.findings[0] if result.drift else None
        text_tail.append(f"drift: {_plural(len(result.drift.findings), 'finding')} ({_esc(first.title)})"
                         if result.drift and first else "drift")

    generator = result.generator
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
    if delivery_note:
        blocks.append(_section(f":warning: {delivery_note}"))
        text_tail.append(delivery_note)
    actions = _actions(result, report_url, dag_id)
    if actions:
        blocks.append(actions)
    context = [f"Run `{_esc(result.run_id)}`"]
    if not generator.saturated:
        context.append(f"generator CPU max {fmt.num(generator.cpu_max_pct, 0)}%")
    blocks.append(_context(" · ".join(context)))
    if stages:  # the table gets what the text budget leaves: fewer rows, the rest in the report
        at = next(i for i, b in enumerate(blocks) if b["type"] == "table")
        rows = MAX_TABLE_ROWS
        while True:
            blocks[at] = _stage_table(stages, rows)
            if rows <= 4 or _text_size(blocks) <= BLOCKS_TEXT_BUDGET:
                break
            rows = max(4, rows - max(1, (_text_size(blocks) - BLOCKS_TEXT_BUDGET) // 40))

    stage_text = "; ".join(
        f"{_esc(s.name)} {s.outcome if s.outcome != 'fail' else 'FAIL'} "
        f"(p95 {fmt.ms(s.p95_ms)}, {fmt.rps(s.rps)}, errors {fmt.pct(s.error_rate)})"
        for s in stages[:MAX_TABLE_ROWS]
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


def summary_broadcast(result: RunResult, *, report_url: str | None) -> Message:
    """The summary's news in the channel (a broadcast reply): the verdict in one line; the rest is the parent.

    Its ``text`` is the whole summary's, so the notification and a search find everything.
    """
    full = summary_message(result, report_url=report_url)
    passed = sum(1 for s in result.stages if s.outcome == "pass")
    line = (f"*{_esc(_headline(result))}*: {_esc(result.scenario)} · {fmt.count(passed)}/"
            f"{fmt.count(len(result.stages))} stages passed")
    if result.aborted and result.stopped:
        line += f" · aborted: {_esc(result.stopped.reason)}"
    if report_url:
        line += f" · {_link(report_url, 'report')}"
    blocks = [_section(line),
              _context("Figures per stage, the comparison and the buttons: the first message of this thread")]
    return _message(full.text, blocks)


def _cost_line(cost: CostRecord) -> str:
    """``Cost: 0.42 USD actual (estimate 0.55 USD), 2 ecs workers fargate-0.5vcpu-1gb``."""
    spot = " spot" if cost.spot else ""
    return (
        f"Cost: {fmt.usd(cost.actual_usd)} actual (estimate {fmt.usd(cost.estimate_usd)}), "
        f"{fmt.count(cost.workers)} {_esc(cost.provider)}{spot} workers {_esc(cost.size)}"
    ).rstrip()


MAX_DRIFT_LINES = 4


def _drift_line(drift: Drift | None) -> str | None:
    """Drift over the long stages, one bullet a finding (the rest: in the report); None when there is none."""
    if drift is None or not drift.findings:
        return None
    shown = drift.findings[:MAX_DRIFT_LINES]
    lines = [":hourglass_flowing_sand: *Drift over time* (a warning; the verdict stands):"]
    lines += [f"      • {_esc(f.title)}" for f in shown]
    if len(drift.findings) > len(shown):
        lines.append(f"      … {fmt.count(len(drift.findings) - len(shown))} more in the report")
    return "\n".join(lines)


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
