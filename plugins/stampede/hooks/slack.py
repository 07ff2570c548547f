"""Slack hook: the Slack provider's ``SlackHook`` with Stampede's channel, bounded retries and a local fallback.

:class:`StampedeSlackHook` *is* a :class:`airflow.providers.slack.hooks.slack.SlackHook`: the connection
(type ``slack``, token in the password), its ``base_url`` (the local stand-in in tests), ``timeout`` and
``proxy`` extras and the ``WebClient`` are the provider's. Stampede adds:

- **where**: a default channel (the connection's ``channel`` extra, then ``STAMPEDE_SLACK_CHANNEL``), and,
  for the command line, the connection made from ``STAMPEDE_SLACK_TOKEN`` / ``STAMPEDE_SLACK_BASE_URL``
  when Airflow has no such connection;
- **bounded retries**: every call has a budget (8 s by default, the caller may give more). Within it,
  connection errors and Slack's 500/503 are retried quickly, and a ``429 ratelimited`` is retried after
  exactly the ``Retry-After`` Slack asked for, whole or fractional seconds. slack-sdk's own
  ``RateLimitErrorRetryHandler`` would sleep the full ``Retry-After`` whatever the budget, and raises on a
  fractional one; all handlers share one ``RetryState``, so their counts are one budget of attempts;
- **a local fallback, only when Slack is down or not configured**: not configured, no channel,
  unreachable, 5xx after the retries, or an error Slack will answer again (``channel_not_found``,
  ``invalid_auth``, ...). The message then goes to the log (logger ``stampede.slack``) and to
  ``fallback_dir/slack_messages.jsonl``. **A rate limit is not an outage**: when the budget ends while Slack
  still says ``ratelimited``, the call returns ``error="ratelimited"`` with the wait Slack asked for and
  writes nothing: the caller keeps the message queued (``stampede.steps.notify``);
- **blocks Slack refuses** (``invalid_blocks``, ``msg_blocks_too_long``, ``only_one_table_allowed``) are sent
  again as text only, so the news still arrives.

Nothing here raises: a Slack problem must never block a run's cleanup or teardown. Text and blocks are
masked (:mod:`stampede.core.redact`) before they leave the process, and the token is never logged.
Importing this module imports Airflow (the provider), about 2.4 s measured here.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from airflow.providers.slack.hooks.slack import SlackHook
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import (
    ConnectionErrorRetryHandler,
    FixedValueRetryIntervalCalculator,
    RateLimitErrorRetryHandler,
    RetryHandler,
)
from slack_sdk.http_retry.builtin_handlers import ServerErrorRetryHandler

from stampede.core import redact
from stampede.core.paths import Artifact

__all__ = ["FALLBACK_FILE", "Delivery", "StampedeSlackHook"]

FALLBACK_FILE = str(Artifact.SLACK_FALLBACK)
ENV_TOKEN = "STAMPEDE_SLACK_TOKEN"
ENV_BASE_URL = "STAMPEDE_SLACK_BASE_URL"
ENV_CHANNEL = "STAMPEDE_SLACK_CHANNEL"
BLOCK_REFUSALS = frozenset({"invalid_blocks", "msg_blocks_too_long", "only_one_table_allowed", "invalid_attachments"})


class _OutageIsNotAnError(logging.Filter):
    """slack-sdk logs each failed attempt at ERROR; for Stampede a Slack outage is a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


log = logging.getLogger("stampede.slack")
_SDK_LOG = logging.getLogger("stampede.slack.sdk")
_SDK_LOG.addFilter(_OutageIsNotAnError())


@dataclass(frozen=True)
class Delivery:
    """What became of one Slack call.

    ``ok``: Slack took it (``channel`` is the channel's ID, ``ts`` the message's). Else ``error`` says why:
    ``ratelimited`` (still queued by the caller; ``retry_after_s`` is Slack's wait) or a reason it was kept
    locally (``kept`` is the fallback file, ``None`` when only logged).
    """

    ok: bool
    error: str | None = None
    channel: str | None = None
    ts: str | None = None
    retry_after_s: float | None = None
    kept: str | None = None
    degraded: str | None = None  # Slack refused the blocks; the text went alone
    data: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def slow(self) -> bool:
        """Slack is only asking to wait: keep the message queued and try again."""
        return self.error == "ratelimited"


class _Deadline:
    """The end of the current call's budget, shared by the retry handlers of one hook."""

    def __init__(self) -> None:
        self._local = threading.local()

    @property
    def at(self) -> float | None:
        return getattr(self._local, "at", None)

    @at.setter
    def at(self, value: float | None) -> None:
        self._local.at = value

    def allows(self, wait_s: float, then_s: float) -> bool:
        """A retry that waits ``wait_s`` and then takes up to ``then_s`` still ends within the budget."""
        return self.at is None or time.monotonic() + wait_s + then_s <= self.at


def _retry_after_s(headers: Mapping[str, Any] | None) -> float | None:
    """Slack's ``Retry-After``, whole or fractional seconds (a header slack-sdk would crash on)."""
    for name, value in (headers or {}).items():
        if name.lower() == "retry-after":
            raw = value[0] if isinstance(value, (list, tuple)) and value else value
            try:
                return max(0.0, float(raw))
            except (TypeError, ValueError):
                return None
    return None


class _RateLimitRetry(RateLimitErrorRetryHandler):
    """A 429 is retried after exactly Slack's ``Retry-After`` (1 s when absent), never past the budget."""

    def __init__(self, deadline: _Deadline, attempt_s: float, max_retry_count: int) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self.deadline, self.attempt_s = deadline, attempt_s

    def _wait(self, response) -> float:  # noqa: ANN001 (slack-sdk's HttpResponse)
        wait = _retry_after_s(response.headers if response is not None else None)
        return 1.0 if wait is None else wait

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:  # noqa: ANN001 (sdk signature)
        return (super()._can_retry(state=state, request=request, response=response, error=error)
                and self.deadline.allows(self._wait(response), self.attempt_s))

    def prepare_for_next_attempt(self, *, state, request, response=None, error=None) -> None:  # noqa: ANN001
        state.next_attempt_requested = True
        time.sleep(self._wait(response))
        state.increment_current_attempt()


def _bounded(base: type[RetryHandler]) -> type[RetryHandler]:
    """``base`` (connection or server errors), retried quickly but never past the budget."""

    class Bounded(base):  # type: ignore[valid-type, misc]
        def __init__(self, deadline: _Deadline, attempt_s: float, interval_s: float, max_retry_count: int) -> None:
            super().__init__(max_retry_count=max_retry_count,
                             interval_calculator=FixedValueRetryIntervalCalculator(fixed_internal=interval_s))
            self.deadline, self.attempt_s, self.interval_s = deadline, attempt_s, interval_s

        def _can_retry(self, *, state, request, response=None, error=None) -> bool:  # noqa: ANN001
            return (super()._can_retry(state=state, request=request, response=response, error=error)
                    and self.deadline.allows(self.interval_s, self.attempt_s))

    Bounded.__name__ = f"Bounded{base.__name__}"
    return Bounded


_ConnectionRetry = _bounded(ConnectionErrorRetryHandler)
_ServerErrorRetry = _bounded(ServerErrorRetryHandler)


class StampedeSlackHook(SlackHook):
    """Post, update and upload Stampede's messages through the Slack provider's hook; never raises.

    :param slack_conn_id: The Airflow connection (type ``slack``) holding the token in its password.
    :param channel: The channel to post to; defaults to the connection's ``channel`` extra, then
        ``STAMPEDE_SLACK_CHANNEL``. Updates and file uploads need the channel's ID, which every
        answer carries (:attr:`Delivery.channel`).
    :param fallback_dir: Where ``slack_messages.jsonl`` is written when Slack is down or not
        configured; ``None`` logs only.
    :param timeout: Per-request timeout in seconds (a connection's ``timeout`` extra may lower it).
    """

    hook_name = "Stampede Slack"

    timeout_s: float = 3.0
    """Per-request timeout: Slack answers in well under a second; a hung Slack costs this per attempt."""
    budget_s: float = 8.0
    """A call's default budget: no retry starts that could end later than this after the call began."""
    max_retries: int = 2
    """Quick retries of connection and server errors."""
    max_rate_limit_retries: int = 30
    retry_interval_s: float = 0.25

    def __init__(
        self,
        *,
        slack_conn_id: str = SlackHook.default_conn_name,
        channel: str | None = None,
        fallback_dir: Path | None = None,
        timeout: float | None = None,
        base_url: str | None = None,
        proxy: str | None = None,
    ) -> None:
        self._deadline = _Deadline()
        attempt_s = timeout or self.timeout_s
        handlers = [
            _ConnectionRetry(self._deadline, attempt_s, self.retry_interval_s, self.max_retries),
            _ServerErrorRetry(self._deadline, attempt_s, self.retry_interval_s, self.max_retries),
            _RateLimitRetry(self._deadline, attempt_s, self.max_rate_limit_retries),
        ]
        super().__init__(slack_conn_id=slack_conn_id, base_url=base_url, timeout=timeout, proxy=proxy,
                         retry_handlers=handlers, logger=_SDK_LOG)
        self._channel = channel
        self.fallback_dir = Path(fallback_dir) if fallback_dir is not None else None

    # -- configuration ---------------------------------------------------------------------

    @cached_property
    def connection(self) -> Any | None:
        """The Airflow connection, else one made from ``STAMPEDE_SLACK_*``, else ``None`` (not configured)."""
        try:
            conn = self.get_connection(self.slack_conn_id)
        except Exception as exc:  # not defined, no API server, no metadata DB: the environment may configure it
            log.debug("Airflow connection %r not available (%s)", self.slack_conn_id, type(exc).__name__)
            conn = None
        if conn is not None and not conn.password:
            log.warning("Airflow connection %r has no token in its password field", self.slack_conn_id)
            conn = None
        return conn or self._connection_from_env()

    @staticmethod
    def _connection_from_env() -> Any | None:
        token = os.environ.get(ENV_TOKEN, "").strip()
        if not token:
            return None
        from airflow.sdk import Connection

        extra = {"base_url": os.environ[ENV_BASE_URL]} if os.environ.get(ENV_BASE_URL) else {}
        return Connection(conn_id="stampede_slack_env", conn_type="slack", password=token, extra=json.dumps(extra))

    @property
    def configured(self) -> bool:
        return self.connection is not None

    @property
    def source(self) -> str:
        conn = self.connection
        if conn is None:
            return "not configured"
        return "environment" if conn.conn_id == "stampede_slack_env" else f"Airflow connection {self.slack_conn_id!r}"

    @property
    def channel(self) -> str | None:
        """The default channel: the constructor's, the connection's ``channel`` extra, ``STAMPEDE_SLACK_CHANNEL``."""
        if self._channel:
            return self._channel
        conn = self.connection
        extra = (conn.extra_dejson or {}) if conn is not None else {}
        return (extra.get("channel") or extra.get("extra__slack__channel") or os.environ.get(ENV_CHANNEL) or None)

    def _get_conn_params(self, conn: Any) -> dict[str, Any]:
        params = super()._get_conn_params(conn)
        try:  # a connection may lower the timeout, never raise it: a hung Slack must not hold the run
            params["timeout"] = min(float(params.get("timeout") or self.timeout_s), self.timeout_s)
        except (TypeError, ValueError):
            params["timeout"] = self.timeout_s
        return params

    @cached_property
    def client(self) -> WebClient:
        """The provider's ``WebClient``, from :attr:`connection` (built on first use)."""
        conn = self.connection
        if conn is None:
            raise LookupError(f"Slack is not configured: set the Airflow connection {self.slack_conn_id!r} or {ENV_TOKEN}")
        client = WebClient(**self._get_conn_params(conn))
        log.info("Slack client for %s (%s)", self._scrub(client.base_url), self.source)
        return client

    # -- public calls ----------------------------------------------------------------------

    def post_message(self, *, text: str, blocks: list | None = None, channel: str | None = None,
                     thread_ts: str | None = None, reply_broadcast: bool = False,
                     budget_s: float | None = None) -> Delivery:
        """Post a message (a reply when ``thread_ts`` is given; also shown in the channel with ``reply_broadcast``).

        :param text: The message (the notification's fallback text); masked before sending.
        :param blocks: Block Kit blocks; masked before sending.
        """
        text = redact.text(str(text))
        blocks = redact.value(list(blocks)) if blocks else None
        record = {"kind": "message", "text": text, "blocks": blocks, "thread_ts": thread_ts,
                  "reply_broadcast": reply_broadcast}

        def call(client: WebClient, target: str, with_blocks: bool) -> Any:
            extra: dict[str, Any] = {"blocks": blocks} if with_blocks and blocks else {}
            if thread_ts:
                extra.update(thread_ts=thread_ts, reply_broadcast=reply_broadcast)
            return client.chat_postMessage(channel=target, text=text, unfurl_links=False, **extra)

        return self._send(record, call, channel=channel, budget_s=budget_s)

    def update_message(self, *, channel: str, ts: str, text: str, blocks: list | None = None,
                       budget_s: float | None = None) -> Delivery:
        """Replace the text and blocks of the message ``ts`` in ``channel`` (the channel's ID)."""
        text = redact.text(str(text))
        blocks = redact.value(list(blocks)) if blocks else None
        record = {"kind": "update", "text": text, "blocks": blocks, "ts": ts}

        def call(client: WebClient, target: str, with_blocks: bool) -> Any:
            return client.chat_update(channel=target, ts=ts, text=text,
                                      **({"blocks": blocks} if with_blocks and blocks else {}))

        return self._send(record, call, channel=channel, budget_s=budget_s)

    def upload_file(self, *, path: Path, title: str, comment: str | None = None, channel: str | None = None,
                    thread_ts: str | None = None, budget_s: float | None = None) -> Delivery:
        """Upload a file to a channel's ID (``files_upload_v2``), into the thread ``thread_ts`` when given."""
        path = Path(path)
        comment = redact.text(str(comment)) if comment else None
        record = {"kind": "file", "path": str(path), "title": title, "text": comment, "thread_ts": thread_ts}

        def call(client: WebClient, target: str, with_blocks: bool) -> Any:
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
            return client.files_upload_v2(
                channel=target, file=str(path), filename=path.name, title=title,
                **({"initial_comment": comment} if comment else {}),
                **({"thread_ts": thread_ts} if thread_ts else {}),
            )

        return self._send(record, call, channel=channel, budget_s=budget_s)

    def keep(self, record: dict[str, Any], *, error: str, detail: str) -> Delivery:
        """Keep an undelivered message locally (log + fallback file): what callers do when they give up on it."""
        return self._fallback(record, error=error, detail=detail)

    # -- internals -------------------------------------------------------------------------

    def _send(self, record: dict[str, Any], call: Callable[[WebClient, str, bool], Any], *, channel: str | None,
              budget_s: float | None) -> Delivery:
        target = channel or self.channel if self.configured else channel
        try:
            if not self.configured:
                return self._fallback(record, error="not_configured", detail="Slack is not configured", quiet=True)
            if not target:
                return self._fallback(record, error="no_channel", detail=f"no channel ({ENV_CHANNEL} unset)")
            client = self.client
            self._deadline.at = time.monotonic() + (budget_s if budget_s is not None else self.budget_s)
            try:
                response = call(client, target, True)
                degraded = None
            except SlackApiError as exc:
                error = _error_of(exc)
                if error not in BLOCK_REFUSALS or not record.get("blocks"):
                    raise
                log.warning("Slack refused the blocks of a %s (%s); sending its text alone", record["kind"], error)
                response, degraded = call(client, target, False), error
            data = dict(response.data) if isinstance(response.data, dict) else {}
            log.info("Slack %s sent to %s", record["kind"], target)
            return Delivery(ok=True, channel=_channel_of(data) or target, ts=_ts_of(data), degraded=degraded, data=data)
        except SlackApiError as exc:
            error = _error_of(exc)
            status = getattr(exc.response, "status_code", None)
            if error == "ratelimited" or status == 429:
                wait = _retry_after_s(getattr(exc.response, "headers", None))
                log.warning("Slack is rate limiting (Retry-After %s s): the %s stays queued", wait, record["kind"])
                return Delivery(ok=False, error="ratelimited", retry_after_s=wait)
            if status is not None and status >= 500:
                return self._fallback(record, error="server_error", detail=f"Slack answered HTTP {status} ({error})")
            return self._fallback(record, error=error, detail=f"Slack answered {error}")
        except FileNotFoundError as exc:
            return self._fallback(record, error="file_not_found", detail=str(exc))
        except OSError as exc:  # refused, reset, DNS, timeout (URLError and TimeoutError are OSErrors)
            return self._fallback(record, error="unreachable", detail=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # bad configuration, bad answer: a Slack problem must not fail the run
            return self._fallback(record, error="client_error", detail=f"{type(exc).__name__}: {exc}")
        finally:
            self._deadline.at = None

    def _scrub(self, text: str) -> str:
        conn = self.__dict__.get("connection")  # only what is already resolved: no lookup while failing
        if conn is not None and conn.password:
            text = str(text).replace(conn.password, "***")
        return redact.text(str(text))

    def _fallback(self, record: dict[str, Any], *, error: str, detail: str, quiet: bool = False) -> Delivery:
        """Log the undelivered message and append it to the fallback file; never raises."""
        content = self._scrub(str(record.get("text") or record.get("title")))
        if quiet:  # not configured: the log is where the message is meant to be read
            log.info("Slack %s not sent (%s): %s", record["kind"], detail, content)
        else:
            log.warning("Slack %s not sent (%s); kept locally", record["kind"], self._scrub(detail))
            log.info("Undelivered Slack %s: %s", record["kind"], content)
        path = None
        if self.fallback_dir is not None:
            entry = {
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "error": error,
                "detail": self._scrub(detail),
                "channel": self._channel or self._resolved_default_channel(),
                **record,
            }
            try:
                self.fallback_dir.mkdir(parents=True, exist_ok=True)
                path = self.fallback_dir / FALLBACK_FILE
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry, default=str) + "\n")
            except OSError as exc:
                log.warning("Could not write the Slack fallback file in %s: %s", self.fallback_dir, exc)
                path = None
        return Delivery(ok=False, error=error, kept=str(path) if path else None)

    def _resolved_default_channel(self) -> str | None:
        conn = self.__dict__.get("connection")  # no connection lookup while reporting a failure
        extra = (conn.extra_dejson or {}) if conn is not None else {}
        return extra.get("channel") or os.environ.get(ENV_CHANNEL) or None


def _error_of(exc: SlackApiError) -> str:
    data = exc.response.data if exc.response is not None and isinstance(exc.response.data, dict) else {}
    return str(data.get("error") or "slack_api_error")


def _channel_of(data: dict[str, Any]) -> str | None:
    if data.get("channel"):
        return str(data["channel"])
    files = data.get("files") or []
    channels = files[0].get("channels") if files and isinstance(files[0], dict) else None
    return channels[0] if channels else None


def _ts_of(data: dict[str, Any]) -> str | None:
    return str(data["ts"]) if data.get("ts") else None
