"""Airflow callbacks: exactly one Slack alert per failure, from a notifier built on ``BaseNotifier``.

One cause, one message, told by whoever knows it first:

================================================  ===================================================
what happened                                     who tells, where
================================================  ===================================================
preflight or the cost check refused the run       the refusing task: "refused: why", one message
                                                  (top-level: a refused run has no thread)
a task failed for a reason of its own             that task, once: a reply broadcast in the run's
(a crash, its execution_timeout, SIGTERM)         thread; the parent says where it failed
the run ended and did not pass, or left test      the summary (it says why); ``final_verdict``'s own
data (``final_verdict`` raises ``RunFailed``)     failure is silent, unless the run has results and no
                                                  summary reached anyone
``final_verdict`` found no run or no results      nobody more: its cause was told; if nothing was told
(after a refusal or a crash)                      at all, ``final_verdict`` tells
the run outlived its ``dagrun_timeout``           the DAG's callback (``reason == "timed_out"``)
the run is late (its deadline passed)             the notifier, awaited by the triggerer
================================================  ===================================================

What was told is read from the run's thread state (:func:`stampede.steps.notify.told`), so the rule
holds across the tasks' processes, retries and a callback run twice. Airflow calls a task's failure
callback only once its retries are spent (``on_retry_callback`` is not set), and never for tasks that
did not run (``upstream_failed``).

:data:`failure_alert` is the instance every task and every DAG uses. As a DAG callback under
``dag.test()`` in Airflow 3.3.2 a notifier cannot render templates (the DAG is a ``SerializedDAG``;
apache/airflow#64649), so this one templates nothing: it reads the channel from the run's
``slack_channel`` parameter itself. ``AsyncCallback(StampedeAlertNotifier)`` makes it the deadline
alert's callback: the triggerer instantiates it with the deadline's context and awaits it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseNotifier

from stampede.core import redact
from stampede.core.errors import Refusal

log = logging.getLogger("stampede.slack")

__all__ = ["StampedeAlertNotifier", "failure_alert"]

VERDICT_TASK = "final_verdict"
REFUSED_PREFIX = "refused:"


def _attr(obj: Any, name: str) -> Any:
    try:
        if isinstance(obj, Mapping):
            return obj.get(name)
        return getattr(obj, name, None)
    except Exception:  # noqa: BLE001 - a property (log_url reads Airflow config) must not break the callback
        return None


def _ids(context: Mapping[str, Any]) -> tuple[str, str, str]:
    ti = context.get("ti") or context.get("task_instance")
    dag_run = context.get("dag_run")
    dag = context.get("dag")
    dag_id = str(_attr(ti, "dag_id") or _attr(dag_run, "dag_id") or _attr(dag, "dag_id") or context.get("dag_id") or "?")
    run_id = str(_attr(dag_run, "run_id") or _attr(dag_run, "dag_run_id") or _attr(ti, "run_id")
                 or context.get("run_id") or "?")
    task_id = str(_attr(ti, "task_id") or context.get("task_id") or "?")
    return dag_id, run_id, task_id


def _channel(context: Mapping[str, Any]) -> str | None:
    params = context.get("params") or {}
    try:
        return params.get("slack_channel") or None
    except Exception:  # noqa: BLE001 - a params object that cannot be read still alerts (default channel)
        return None


def _is_refusal(exception: Any) -> str | None:
    """The refusal's one line when the task failed because the run was refused, else ``None``."""
    cause = getattr(exception, "__cause__", None)
    if isinstance(cause, Refusal):
        return str(cause)
    text = str(exception or "")
    return text[len(REFUSED_PREFIX):].strip() if text.startswith(REFUSED_PREFIX) else None


def alert_for_task(context: Mapping[str, Any]) -> bool:
    """A task failed: tell Slack once for its cause (see the module's table). Whether a message was queued."""
    from stampede.render.slack import failure_message, refusal_message
    from stampede.steps import notify
    from stampede.steps.verdict import RunFailed

    dag_id, run_id, task_id = _ids(context)
    exception = context.get("exception")
    ti = context.get("ti") or context.get("task_instance")
    log_url = _attr(ti, "log_url")
    refusal = _is_refusal(exception)
    if refusal is not None:
        message = refusal_message(dag_id=dag_id, run_id=run_id, reason=refusal, log_url=log_url)
        return notify.notify_alert(run_id, dag_id=dag_id, key="refused", message=message, channel=_channel(context))
    if task_id == VERDICT_TASK or isinstance(exception, RunFailed):
        told = notify.told(run_id, dag_id=dag_id)
        # its problems are the verdict and what was left (the summary's news) or the lack of results
        # (the news of whichever failure came first): it speaks only when no one else could have
        if told.summary or (told.alerts and not told.results):
            log.info("%s failed: already told in Slack (%s)", task_id, "summary" if told.summary else told.alerts)
            return False
        message = failure_message(dag_id=dag_id, task_id=task_id, run_id=run_id, log_url=log_url, exception=exception)
        return notify.notify_alert(run_id, dag_id=dag_id, key="outcome", message=message, channel=_channel(context),
                                   status=f":x: *Did not pass*: {_short(exception)}")
    message = failure_message(dag_id=dag_id, task_id=task_id, run_id=run_id, log_url=log_url, exception=exception)
    return notify.notify_alert(run_id, dag_id=dag_id, key=f"task:{task_id}", message=message, channel=_channel(context),
                               status=f":boom: *Failed* in `{task_id}`: {_short(exception)}")


def alert_for_run(context: Mapping[str, Any]) -> bool:
    """The DAG run failed: only a timeout is news here (a failed task told its own failure)."""
    if context.get("reason") != "timed_out":
        return False
    from stampede.plan.run_plan import run_tag_for
    from stampede.render.slack import timed_out_message
    from stampede.steps import notify

    dag_id, run_id, _ = _ids(context)
    limit = _attr(context.get("dag"), "dagrun_timeout")
    message = timed_out_message(dag_id=dag_id, run_id=run_id, timeout=str(limit or "its dagrun_timeout"),
                                run_tag=run_tag_for(run_id, dag_id))
    return notify.notify_alert(run_id, dag_id=dag_id, key="timed_out", message=message, channel=_channel(context),
                               status=f":hourglass: *Timed out* after {limit or 'its dagrun_timeout'}")


def alert_late(context: Mapping[str, Any]) -> bool:
    """A deadline passed while the run goes on (the triggerer's simplified context: ``dag_run``, ``deadline``)."""
    from stampede.render.slack import late_message
    from stampede.steps import notify

    dag_run, deadline = context.get("dag_run") or {}, context.get("deadline") or {}
    dag_id, run_id, _ = _ids({"dag_run": dag_run})
    message = late_message(dag_id=dag_id, run_id=run_id, queued_at=_text(_attr(dag_run, "queued_at")),
                           deadline=_text(_attr(deadline, "deadline_time")))
    channel = (_attr(dag_run, "conf") or {}).get("slack_channel") if isinstance(_attr(dag_run, "conf"), Mapping) else None
    return notify.notify_alert(run_id, dag_id=dag_id, key="late", message=message, channel=channel,
                               status=f":turtle: *Late*: still running past {_text(_attr(deadline, 'deadline_time'))}")


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _short(exception: Any) -> str:
    """``RuntimeError: master died``: the exception's first line, masked, escaped for mrkdwn, 200 characters at most."""
    if exception is None:
        return "no exception recorded"
    detail = str(exception).strip()
    text = f"{type(exception).__name__}: {detail}" if detail else type(exception).__name__
    text = redact.text(text.splitlines()[0]).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text if len(text) <= 200 else text[:199] + "…"


class StampedeAlertNotifier(BaseNotifier):
    """Stampede's failure, timeout and deadline alerts in the run's Slack thread (never raises).

    As a task's ``on_failure_callback``: :func:`alert_for_task`; as the DAG's: :func:`alert_for_run`;
    awaited by the triggerer for a deadline alert (``AsyncCallback(StampedeAlertNotifier)``): the late alert.
    """

    template_fields = ()

    def __init__(self, context: Any = None, **kwargs: Any) -> None:
        super().__init__(context=context)

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing is templated, so nothing needs the DAG's jinja environment (apache/airflow#64649)."""

    def notify(self, context: Any) -> None:
        try:
            if "reason" in context:  # a DAG run's callback (a task's context has no reason)
                alert_for_run(context)
            else:
                alert_for_task(context)
        except Exception as exc:  # noqa: BLE001 - a Slack problem must not hide the task's own failure
            log.warning("Slack failure notification not sent: %s", redact.text(f"{type(exc).__name__}: {exc}"))

    async def async_notify(self, context: Any) -> None:
        try:
            await asyncio.to_thread(alert_late, context or {})  # Slack's HTTP calls block: not on the event loop
        except Exception as exc:  # noqa: BLE001 - see notify
            log.warning("Slack late-run notification not sent: %s", redact.text(f"{type(exc).__name__}: {exc}"))


failure_alert = StampedeAlertNotifier()
