"""Step 10, notify: one Slack thread per run, live, in order, and nothing lost while Slack is merely slow.

The thread:

- the **start** message is the parent (posted as preflight passes; its channel ID and ts are kept in the run
  folder, ``slack_thread.json``);
- a **reply per stage** as the stage ends: :func:`notify_stage_ended` is what the load step calls live;
  :func:`notify_stages` (after the load step) and :func:`notify_summary` post the replies of the stages
  nobody posted live;
- an **abort** or a **failure** is a reply *broadcast* to the channel (:func:`notify_stopped`,
  :func:`notify_alert`);
- the **summary** replaces the parent (the verdict, the table of stages, the buttons) and is broadcast as a
  short reply; the **chart** is uploaded into the thread.

Every message goes through one queue kept in the run folder: an item is queued once under a stable id
(``start``, ``stage:<name>``, ``abort``, ``summary``, ``alert:<cause>``, ...), so a retried task or a second
caller never posts it twice, and items leave the queue in order, one sender at a time across the run's tasks
and threads (a lock file). Sends are paced at one a second (Slack's ``chat.postMessage`` allows about one
message per second per channel). A ``429`` is waited out exactly as long as Slack asks (the hook) and the
message stays queued: it goes to the fallback file only when Slack is down or not configured, or when it is
still rate limited when the summary's budget (:data:`SUMMARY_BUDGET_S`) runs out. The summary says which
messages did not reach Slack and where they are.

The live path never blocks the load: :func:`notify_stage_ended` queues the message and returns; a daemon
thread sends it. If the process ends first, the next step's call sends what is still queued.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from stampede.core.artifacts import RunFolder
from stampede.core.paths import Artifact
from stampede.core.records import RunResult, StageResult, Stop
from stampede.hooks.slack import Delivery, StampedeSlackHook
from stampede.plan.run_plan import RunPlan
from stampede.render.slack import (
    Message,
    abort_message,
    stage_ended_message,
    stage_message,
    start_message,
    summary_broadcast,
    summary_message,
    with_status,
)
from stampede.steps.folder import folder_for_run, folder_of
from stampede.steps.report import report_url

__all__ = [
    "Told",
    "notify_alert",
    "notify_stage_ended",
    "notify_stages",
    "notify_start",
    "notify_stopped",
    "notify_summary",
    "told",
]

log = logging.getLogger(__name__)
T = TypeVar("T")

PACE_S = 1.0
"""At most one message a second: Slack's chat.postMessage allows about one per second per channel."""
START_BUDGET_S = 15.0
STAGES_BUDGET_S = 60.0
ALERT_BUDGET_S = 20.0
SUMMARY_BUDGET_S = 120.0
"""How long the summary waits out a rate limit before what is still queued goes to the fallback file."""
LIVE_BUDGET_S = 900.0
"""The background sender's budget: it runs beside the load, so it may wait longer."""

START, ABORT, SUMMARY, BROADCAST, CHART = "start", "abort", "summary", "summary:broadcast", "chart"
DOWN = ("unreachable", "server_error")  # what "Slack is down" looks like (not a rate limit, not a refusal)


@dataclass(frozen=True)
class Told:
    """What the run's thread has already said (sent, kept locally or queued): who speaks next decides from it."""

    summary: bool
    alerts: tuple[str, ...]
    thread: bool  # a parent exists in Slack
    results: bool = False  # the run has results (a verdict, cleanup figures): news only a summary tells


# -- the queue in the run folder ----------------------------------------------------------------------

def _new_state() -> dict[str, Any]:
    return {"channel": None, "parent": None, "start": None, "sent": {}, "kept": {}, "queue": [], "last_post_at": 0.0}


@contextmanager
def _flock(path: Path, *, deadline: float | None = None) -> Iterator[bool]:
    """An exclusive lock on ``path`` (threads and processes alike: flock is per open file); ``False`` when
    ``deadline`` (monotonic) passes first."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    acquired = False
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                acquired = True
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:  # type: ignore[operator]
                    break
                time.sleep(0.05)
        yield acquired
    finally:
        if acquired:
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read(folder: RunFolder) -> dict[str, Any]:
    return {**_new_state(), **(folder.read_json(Artifact.SLACK_THREAD) or {})}


def _change(folder: RunFolder, change: Callable[[dict[str, Any]], T]) -> T:
    """Read, change and write the thread's state under its lock (short: never held across a Slack call)."""
    with _flock(folder.file(Artifact.SLACK_LOCK)):
        state = _read(folder)
        result = change(state)
        folder.write_json(Artifact.SLACK_THREAD, state)
        return result


def _item(item_id: str, message: Message, *, kind: str = "post", reply: bool = False, broadcast: bool = False,
          **extra: Any) -> dict[str, Any]:
    return {"id": item_id, "kind": kind, "text": message.text, "blocks": message.blocks, "reply": reply,
            "broadcast": broadcast, **extra}


def _enqueue(folder: RunFolder, items: list[dict[str, Any]], *, channel: str | None = None,
             start: Message | None = None) -> int:
    """Queue the items not seen before (by id); how many were new."""
    def change(state: dict[str, Any]) -> int:
        if channel and not state["channel"]:
            state["channel"] = channel
        if start is not None and not state["start"]:
            state["start"] = {"text": start.text, "blocks": start.blocks}
        seen = set(state["sent"]) | set(state["kept"]) | {i["id"] for i in state["queue"]}
        new = [i for i in items if i["id"] not in seen]
        state["queue"].extend(new)
        return len(new)

    return _change(folder, change)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _record(state: dict[str, Any], item: dict[str, Any], delivery: Delivery, *, parent: bool) -> None:
    state["queue"] = [i for i in state["queue"] if i["id"] != item["id"]]
    live = {"live": True} if item.get("live") else {}
    if delivery.ok:
        state["sent"][item["id"]] = {"channel": delivery.channel, "ts": delivery.ts, "at": _now(), **live,
                                     **({"degraded": delivery.degraded} if delivery.degraded else {})}
        if parent and delivery.ts:
            state["parent"] = {"channel": delivery.channel, "ts": delivery.ts}
    else:
        state["kept"][item["id"]] = {"error": delivery.error, "at": _now(), "path": delivery.kept, **live}
    state["last_post_at"] = time.time()


# -- sending -----------------------------------------------------------------------------------------------

def _hook(folder: RunFolder, state: dict[str, Any]) -> StampedeSlackHook:
    """The hook; its fallback file (the hook appends to it itself) is the run folder's, from the store first."""
    folder.fetch(Artifact.SLACK_FALLBACK)
    return StampedeSlackHook(channel=state["channel"] or None, fallback_dir=folder.path)


def _deliver(hook: StampedeSlackHook, folder: RunFolder, item: dict[str, Any], state: dict[str, Any],
             budget_s: float) -> tuple[Delivery, bool]:
    """Send one item: (what Slack said, whether it became the thread's parent)."""
    parent = state["parent"]
    if item["reply"] and parent is None and state["start"] and hook.configured and item["id"] != START:
        # Slack was down when the run started: post the start message again so the replies have a thread
        start = state["start"]
        again = hook.post_message(text=start["text"], blocks=start["blocks"], budget_s=budget_s)
        if again.slow:
            return again, False
        if again.ok:
            parent = _change(folder, lambda s: s.update(parent={"channel": again.channel, "ts": again.ts})
                             or s["parent"])
            state["parent"] = parent
    kind, text, blocks = item["kind"], item["text"], item["blocks"]
    if kind == "post" and item["reply"] and parent:
        return hook.post_message(text=text, blocks=blocks, channel=parent["channel"], thread_ts=parent["ts"],
                                 reply_broadcast=item["broadcast"], budget_s=budget_s), False
    if kind == "post":
        return hook.post_message(text=text, blocks=blocks, budget_s=budget_s), item["id"] == START
    if kind == "update_reply":
        sent = state["sent"].get(item["of"])
        if sent and sent.get("ts"):  # the live reply, replaced by the judged one
            return hook.update_message(channel=sent["channel"], ts=sent["ts"], text=text, blocks=blocks,
                                       budget_s=budget_s), False
        if parent:  # the live reply never reached Slack: the judged one is a reply of its own
            return hook.post_message(text=text, blocks=blocks, channel=parent["channel"], thread_ts=parent["ts"],
                                     budget_s=budget_s), False
        return hook.post_message(text=text, blocks=blocks, budget_s=budget_s), False
    if kind == "update_parent" and parent:
        return hook.update_message(channel=parent["channel"], ts=parent["ts"], text=text, blocks=blocks,
                                   budget_s=budget_s), False
    if kind == "update_parent":
        if item.get("only_with_thread"):
            return Delivery(ok=False, error="no_thread"), False
        return hook.post_message(text=text, blocks=blocks, budget_s=budget_s), True  # becomes the parent
    if kind == "upload":
        if parent or not hook.configured:
            return hook.upload_file(path=Path(item["path"]), title=item["title"], comment=text or None,
                                    channel=parent["channel"] if parent else None,
                                    thread_ts=parent["ts"] if parent else None, budget_s=budget_s), False
        return hook.keep(_record_of(item), error="no_thread", detail="the run has no thread in Slack to share the file in"), False
    raise ValueError(f"unknown Slack item kind {kind!r}")


def _pace(state: dict[str, Any]) -> None:
    wait = state["last_post_at"] + PACE_S - time.time()
    if wait > 0:
        time.sleep(min(wait, PACE_S))


def _drain(folder: RunFolder, budget_s: float) -> bool:
    """Send what is queued, in order, until the queue is empty (True) or the budget ends (False).

    One sender at a time: a caller that cannot get the sender's lock within its budget leaves its
    items to the sender that holds it, which sends everything queued before it lets go.
    """
    deadline = time.monotonic() + budget_s
    with _flock(folder.file(Artifact.SLACK_SENDER_LOCK), deadline=deadline) as mine:
        if not mine:
            return False
        hook: StampedeSlackHook | None = None
        down: str | None = None  # Slack was found down in this send: the rest goes to the file at once
        while deadline - time.monotonic() > 0:
            with _flock(folder.file(Artifact.SLACK_LOCK)):
                state = _read(folder)
            if not state["queue"]:
                return True
            item = state["queue"][0]
            hook = hook or _hook(folder, state)
            if down:
                delivery, parent = hook.keep(_record_of(item), error=down,
                                             detail="Slack was unreachable a moment ago in this send"), False
            else:
                if hook.configured:  # the fallback file has no rate limit: a run without Slack waits for nothing
                    _pace(state)
                budget = max(0.5, min(hook.budget_s, deadline - time.monotonic()))
                delivery, parent = _deliver(hook, folder, item, state, budget)
                if delivery.error in DOWN:
                    down = delivery.error
            if delivery.slow:
                wait = delivery.retry_after_s if delivery.retry_after_s is not None else 1.0
                if time.monotonic() + wait > deadline:
                    log.warning("Slack still rate limiting; %d message(s) stay queued", len(state["queue"]))
                    return False
                time.sleep(wait)
                continue
            _change(folder, lambda s: _record(s, item, delivery, parent=parent))
            if delivery.kept:
                folder.publish(Artifact.SLACK_FALLBACK)  # what the hook kept, where every host can read it
        with _flock(folder.file(Artifact.SLACK_LOCK)):
            return not _read(folder)["queue"]


def _record_of(item: dict[str, Any]) -> dict[str, Any]:
    """An item as the fallback file keeps it."""
    kind = {"post": "message", "update_parent": "update", "update_reply": "update", "upload": "file"}[item["kind"]]
    return {"kind": kind, "id": item["id"], "text": item["text"], "blocks": item["blocks"],
            **({"path": item["path"], "title": item["title"]} if item["kind"] == "upload" else {})}


def _give_up(folder: RunFolder) -> int:
    """Keep what is still queued locally (Slack rate limited the run past the summary's budget)."""
    with _flock(folder.file(Artifact.SLACK_SENDER_LOCK), deadline=time.monotonic() + 5) as mine:
        if not mine:
            return 0
        state = _read(folder)
        hook = _hook(folder, state)
        for item in state["queue"]:
            kept = hook.keep(_record_of(item), error="ratelimited", detail=f"Slack was still rate limiting after {SUMMARY_BUDGET_S:.0f} s")
            _change(folder, lambda s, item=item, kept=kept: _record(s, item, kept, parent=False))
        return len(state["queue"])


_senders: dict[str, _Sender] = {}
_senders_lock = threading.Lock()


class _Sender(threading.Thread):
    """Sends a run's queue beside the load; wakes when more is queued, ends when the queue is empty."""

    def __init__(self, folder: RunFolder) -> None:
        super().__init__(name=f"slack-sender-{folder.path.name}", daemon=True)
        self.folder = folder
        self.more = True

    def run(self) -> None:
        key = str(self.folder.path)
        while True:
            with _senders_lock:
                if not self.more:
                    _senders.pop(key, None)
                    return
                self.more = False
            try:
                _drain(self.folder, LIVE_BUDGET_S)
            except Exception as exc:  # noqa: BLE001 - a thread that dies silently would strand the queue
                log.warning("Slack sender stopped: %s: %s", type(exc).__name__, exc)


def _send_in_background(folder: RunFolder) -> None:
    key = str(folder.path)
    with _senders_lock:
        sender = _senders.get(key)
        if sender is not None and sender.is_alive():
            sender.more = True
            return
        sender = _senders[key] = _Sender(folder)
    sender.start()


def _safely(what: str, call: Callable[[], T], default: T) -> T:
    """Slack never fails the run: a bug or a broken run folder here is a warning."""
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - see docstring
        log.warning("Slack %s not sent: %s: %s", what, type(exc).__name__, exc)
        return default


# -- the steps ---------------------------------------------------------------------------------------------

def notify_start(plan: RunPlan, *, channel: str | None = None) -> dict[str, Any]:
    """Post the start message, the thread's parent.

    :param channel: the run's channel (the DAG's ``slack_channel`` parameter); default the connection's.
    """
    def send() -> dict[str, Any]:
        folder = folder_of(plan)
        message = start_message(plan)
        _enqueue(folder, [_item(START, message)], channel=channel, start=message)
        if not _drain(folder, START_BUDGET_S):
            _send_in_background(folder)  # rate limited: the sender goes on beside the run
        return _answer(folder, START)

    return _safely("start message", send, {"ok": False})


def notify_stage_ended(plan: RunPlan, stage: StageResult) -> None:
    """A stage ended: queue its reply in the run's thread and return at once (a daemon thread sends it).

    For the load step's live loop: never blocks on Slack, never raises; called again for the same stage,
    it posts nothing more.
    """
    def queue() -> None:
        if not stage.ran:
            return
        folder = folder_of(plan)
        if _enqueue(folder, [_item(f"stage:{stage.name}", stage_ended_message(stage), reply=True, live=True)]):
            _send_in_background(folder)

    _safely(f"reply for stage {stage.name}", queue, None)


def notify_stopped(plan: RunPlan, stop: Stop) -> None:
    """The load stopped early: queue the abort reply, broadcast to the channel, and return at once."""
    def queue() -> None:
        folder = folder_of(plan)
        if _enqueue(folder, [_item(ABORT, abort_message(plan.run_id, stop), reply=True, broadcast=True)]):
            _send_in_background(folder)

    _safely("abort reply", queue, None)


def _stage_items(result: RunResult, live: set[str]) -> list[dict[str, Any]]:
    """A reply per stage that ran; a stage posted live (in ``live``) gets its judged figures in its reply."""
    items = [_item(f"stage:{s.name}:judged", stage_message(s), kind="update_reply", of=f"stage:{s.name}")
             if f"stage:{s.name}" in live else _item(f"stage:{s.name}", stage_message(s), reply=True)
             for s in result.stages if s.ran]
    if result.stopped is not None:
        items.append(_item(ABORT, abort_message(result.run_id, result.stopped), reply=True, broadcast=True))
    return items


def _live_stages(folder: RunFolder) -> set[str]:
    """The ids of the stage replies posted (or queued) live, before the run was judged."""
    state = _read(folder)
    return {i["id"] for i in state["queue"] if i.get("live")} | {
        item_id for item_id, sent in {**state["sent"], **state["kept"]}.items() if sent.get("live")}


def notify_stages(plan: RunPlan) -> dict[str, Any]:
    """After the load step: the replies of the stages (and the abort) nobody posted live, in order."""
    def send() -> dict[str, Any]:
        folder = folder_of(plan)
        if not folder.exists(Artifact.RESULTS):
            return {"ok": False, "reason": "no results"}
        _enqueue(folder, _stage_items(folder.results(), _live_stages(folder)))
        return {"ok": _drain(folder, STAGES_BUDGET_S)}

    return _safely("stage replies", send, {"ok": False})


def _delivery_note(state: dict[str, Any], hook: StampedeSlackHook) -> str | None:
    """Which messages of the run did not reach Slack, and where they are (mrkdwn)."""
    if not hook.configured:
        return (f"Slack is not configured: this run's messages are in `{Artifact.SLACK_FALLBACK}` "
                "in the run folder and in the task log.")
    kept = {k: v for k, v in state["kept"].items() if v.get("error") not in ("no_thread",)}
    if not kept:
        return None
    errors = sorted({v["error"] for v in kept.values()})
    return (f"{len(kept)} message(s) of this run did not reach Slack ({', '.join(errors)}); "
            f"they are in `{Artifact.SLACK_FALLBACK}` in the run folder.")


def notify_summary(plan: RunPlan, *, dag_id: str | None = None) -> dict[str, Any]:
    """The summary: the stages not posted yet, then the parent replaced by the summary, a broadcast reply
    with the verdict, and the chart in the thread.

    :param dag_id: the Airflow DAG of the run: the summary then carries the re-run and pin buttons.
    """
    def send() -> dict[str, Any]:
        folder = folder_of(plan)
        if not folder.exists(Artifact.RESULTS):
            _drain(folder, ALERT_BUDGET_S)  # what was queued (start, alerts) still goes
            return {"ok": False, "reason": "no results"}
        deadline = time.monotonic() + SUMMARY_BUDGET_S
        result = folder.results()
        _enqueue(folder, _stage_items(result, _live_stages(folder)))
        _drain(folder, SUMMARY_BUDGET_S / 2)
        with _flock(folder.file(Artifact.SLACK_LOCK)):
            state = _read(folder)
        url = report_url(folder)
        summary = summary_message(result, report_url=url, dag_id=dag_id,
                                  delivery_note=_delivery_note(state, _hook(folder, state)))
        items = [_item(SUMMARY, summary, kind="update_parent"),
                 _item(BROADCAST, summary_broadcast(result, report_url=url), reply=True, broadcast=True)]
        chart = folder.fetch(f"{Artifact.CHARTS}/load.png")  # the report task may have drawn it on another host
        if chart.exists():
            items.append(_item(CHART, Message(text=f"Load over time, run {result.run_id}"), kind="upload",
                               path=str(chart), title=f"{result.scenario} {result.verdict.upper()}: users, req/s, errors"))
        _enqueue(folder, items)
        if not _drain(folder, max(1.0, deadline - time.monotonic())):
            _give_up(folder)
        return _answer(folder, SUMMARY)

    return _safely("summary", send, {"ok": False})


def notify_alert(run_id: str, *, key: str, message: Message, status: str | None = None,
                 channel: str | None = None, dag_id: str = "") -> bool:
    """One alert for one cause (``key``), a reply broadcast in the run's thread (top-level when the run has
    none); with ``status``, the parent also says it until a summary replaces it.

    :returns: whether it was queued now (``False``: this cause was already told).
    """
    def send() -> bool:
        folder = folder_for_run(run_id, dag_id=dag_id)
        items = [_item(f"alert:{key}", message, reply=True, broadcast=True)]
        with _flock(folder.file(Artifact.SLACK_LOCK)):
            state = _read(folder)
        if status and state["start"] and SUMMARY not in state["sent"]:
            start = Message(text=state["start"]["text"], blocks=state["start"]["blocks"])
            items.append(_item(f"status:{key}", with_status(start, status), kind="update_parent",
                               only_with_thread=True))
        if not _enqueue(folder, items, channel=channel):
            return False
        _drain(folder, ALERT_BUDGET_S)
        return True

    return _safely(f"alert {key}", send, False)


def told(run_id: str, *, dag_id: str = "") -> Told:
    """What the run's thread has said so far (sent, kept locally or still queued)."""
    folder = folder_for_run(run_id, dag_id=dag_id)
    with _flock(folder.file(Artifact.SLACK_LOCK)):
        state = _read(folder)
    ids = set(state["sent"]) | set(state["kept"]) | {i["id"] for i in state["queue"]}
    return Told(summary=SUMMARY in ids, alerts=tuple(sorted(i[len("alert:"):] for i in ids if i.startswith("alert:"))),
                thread=state["parent"] is not None, results=folder.exists(Artifact.RESULTS))


def _answer(folder: RunFolder, item_id: str) -> dict[str, Any]:
    with _flock(folder.file(Artifact.SLACK_LOCK)):
        state = _read(folder)
    sent = state["sent"].get(item_id)
    return {"ok": sent is not None, "thread_ts": (state["parent"] or {}).get("ts"),
            "channel": (state["parent"] or {}).get("channel"), "sent": len(state["sent"]),
            "kept": len(state["kept"]), "queued": len(state["queue"])}
