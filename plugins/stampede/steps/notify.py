"""Step 10, notify: Slack hears that a run starts, how each stage went, and the summary.

The start message goes out as preflight passes. At the end, once the report is
written: one message per stage that ran, one for an early stop, then the
summary with the main chart. Each batch is sent once per run (a retried task
does not repeat it). Slack never blocks the run: the hook falls back to a file
in the run folder when Slack is down or not configured.
"""

from __future__ import annotations

import logging
from typing import Any

from stampede.core.paths import Artifact
from stampede.hooks.slack import StampedeSlackHook
from stampede.plan.run_plan import RunPlan
from stampede.render.slack import abort_message, stage_message, start_message, summary_message
from stampede.steps.folder import folder_of
from stampede.steps.report import report_url

log = logging.getLogger(__name__)


def slack_hook(plan: RunPlan) -> StampedeSlackHook:
    """The hook; its fallback file (appended by the hook itself) is the run folder's, fetched from the store first."""
    folder = folder_of(plan)
    folder.fetch(Artifact.SLACK_FALLBACK)
    return StampedeSlackHook(fallback_dir=folder.path)


def notify_start(plan: RunPlan) -> None:
    message = start_message(plan)
    slack_hook(plan).post_message(text=message.text, blocks=message.blocks)
    folder_of(plan).publish(Artifact.SLACK_FALLBACK)


def notify_summary(plan: RunPlan) -> dict[str, Any]:
    folder = folder_of(plan)
    if not folder.exists(Artifact.RESULTS):
        return {"ok": False, "reason": "no results"}
    result = folder.results()
    hook = slack_hook(plan)
    if not folder.exists(Artifact.SLACK_STAGES_SENT):
        for stage in result.stages:
            if stage.ran:
                message = stage_message(stage)
                hook.post_message(text=message.text, blocks=message.blocks)
        if result.stopped is not None:
            message = abort_message(plan.run_id, result.stopped)
            hook.post_message(text=message.text, blocks=message.blocks)
        folder.write_text(Artifact.SLACK_STAGES_SENT, "sent")
    message = summary_message(result, report_url=report_url(folder))
    answer = hook.post_message(text=message.text, blocks=message.blocks)
    chart = folder.fetch(f"{Artifact.CHARTS}/load.png")
    if chart.exists():  # the main chart as an image (files_upload_v2)
        answer["chart"] = hook.upload_file(
            path=chart, title=f"{result.scenario} {result.verdict.upper()}: users, req/s, errors",
            comment=f"Load over time, run {result.run_id}",
        )
    folder.publish(Artifact.SLACK_FALLBACK)
    return answer
