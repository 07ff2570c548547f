"""Airflow callbacks: a task that fails tells Slack, once, with its (masked) exception and log link."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from stampede.core import redact
from stampede.core.paths import reports_root

log = logging.getLogger("stampede.slack")


def _attr(obj: Any, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - a property (log_url reads Airflow config) must not break the callback
        return None


def task_failure_callback(context: Mapping[str, Any]) -> None:
    """Airflow ``on_failure_callback`` for tasks: post the failure message to Slack.

    Never raises: a Slack problem must not hide the task's own failure. Without a
    Slack configuration the message goes to the log and to
    ``<reports root>/slack_messages.jsonl``.
    """
    try:
        from stampede.hooks.slack import StampedeSlackHook
        from stampede.render.slack import failure_message

        ti = context.get("ti") or context.get("task_instance")
        dag_run = context.get("dag_run")
        message = failure_message(
            dag_id=str(_attr(ti, "dag_id") or _attr(dag_run, "dag_id") or context.get("dag_id") or "?"),
            task_id=str(_attr(ti, "task_id") or context.get("task_id") or "?"),
            run_id=str(_attr(dag_run, "run_id") or _attr(ti, "run_id") or context.get("run_id") or "?"),
            log_url=_attr(ti, "log_url"),
            exception=context.get("exception"),
        )
        StampedeSlackHook(fallback_dir=reports_root()).post_message(text=message.text, blocks=message.blocks)
    except Exception as exc:  # noqa: BLE001 - the callback must never raise (see docstring)
        log.warning("Slack failure notification not sent: %s", redact.text(f"{type(exc).__name__}: {exc}"))
