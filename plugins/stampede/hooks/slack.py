"""Slack hook: post messages and upload files with slack-sdk, never failing the run.

Configuration, first found wins:

1. the Airflow connection ``conn_id`` (type ``slack``, as the Slack provider
   defines it): token in ``password``; extras ``base_url``, ``timeout``, ``proxy``
   (also in their ``extra__slack__`` prefixed form) and, Stampede's addition, a
   default ``channel``. Looked up only when Airflow is already loaded in this
   process (a task, a callback, ``dag.test()``) or the connection is given as
   ``AIRFLOW_CONN_<CONN_ID>``, so the CLI does not pay for importing Airflow;
2. the environment: ``STAMPEDE_SLACK_TOKEN``, ``STAMPEDE_SLACK_BASE_URL``,
   ``STAMPEDE_SLACK_CHANNEL`` (the channel also completes a connection that has none).

Without either, messages go to the log (logger ``stampede.slack``) and to
``fallback_dir/slack_messages.jsonl``. When Slack errors or cannot be reached, the
same happens with a warning, and the call returns ``{"ok": False, ...}``: a Slack
outage must never block a run's cleanup or teardown. Each call is bounded: a
short per-request timeout, at most two quick retries on connection errors, and no
retry that would end past a fixed budget. The token is never logged.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import ConnectionErrorRetryHandler, FixedValueRetryIntervalCalculator

from stampede.core import redact
from stampede.core.paths import Artifact

__all__ = ["FALLBACK_FILE", "SlackNotConfiguredError", "StampedeSlackHook"]

FALLBACK_FILE = str(Artifact.SLACK_FALLBACK)
ENV_TOKEN = "STAMPEDE_SLACK_TOKEN"
ENV_BASE_URL = "STAMPEDE_SLACK_BASE_URL"
ENV_CHANNEL = "STAMPEDE_SLACK_CHANNEL"


class _OutageIsNotAnError(logging.Filter):
    """slack-sdk logs each failed attempt at ERROR; for Stampede a Slack outage is a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        return True


_SDK_LOG = logging.getLogger("stampede.slack.sdk")
_SDK_LOG.addFilter(_OutageIsNotAnError())


class SlackNotConfiguredError(LookupError):
    """Neither the Airflow connection nor the environment configures Slack."""


@dataclass(frozen=True)
class _SlackConfig:
    token: str = field(repr=False)  # repr=False: a logged config never shows it
    base_url: str | None
    channel: str | None
    timeout: float | None
    proxy: str | None
    source: str


class _BoundedRetryHandler(ConnectionErrorRetryHandler):
    """Retry connection errors quickly, but never past the current call's deadline."""

    def __init__(self, *, max_retry_count: int, interval_s: float, attempt_s: float) -> None:
        super().__init__(
            max_retry_count=max_retry_count,
            interval_calculator=FixedValueRetryIntervalCalculator(fixed_internal=interval_s),
        )
        self.interval_s = interval_s
        self.attempt_s = attempt_s
        self.deadline: float | None = None

    def _can_retry(self, *, state, request, response=None, error=None) -> bool:  # noqa: ANN001 (sdk signature)
        if self.deadline is not None and time.monotonic() + self.interval_s + self.attempt_s > self.deadline:
            return False
        return super()._can_retry(state=state, request=request, response=response, error=error)


def _extra(extra: Mapping[str, Any], name: str) -> Any:
    """An extra field by name, or its ``extra__slack__`` prefixed form (the provider's rule)."""
    value = extra.get(name)
    if value in (None, ""):
        value = extra.get(f"extra__slack__{name}")
    return None if value in (None, "") else value


class StampedeSlackHook:
    """Post Stampede's messages and files to Slack through slack-sdk's ``WebClient``.

    :param conn_id: The Airflow connection (type ``slack``) holding the token in its password.
    :param channel: The channel to post to; defaults to the connection's ``channel`` extra,
        then ``STAMPEDE_SLACK_CHANNEL``. File uploads need a channel ID (``C0123...``).
    :param fallback_dir: Where ``slack_messages.jsonl`` is written when Slack is not
        configured or not reachable; ``None`` logs only.
    """

    conn_name_attr = "conn_id"
    default_conn_name = "slack_api_default"
    conn_type = "slack"
    hook_name = "Stampede Slack"

    timeout_s: float = 3.0
    """Per-request timeout (a connection's ``timeout`` extra may lower it, never raise it)."""
    max_retries: int = 2
    retry_interval_s: float = 0.25
    budget_s: float = 8.0
    """No retry starts that could end later than this after the call began.

    An upload is three requests; so the worst case is budget + 2 x timeout = 14 s.
    """

    def __init__(
        self,
        *,
        conn_id: str = default_conn_name,
        channel: str | None = None,
        fallback_dir: Path | None = None,
    ) -> None:
        self.conn_id = conn_id
        self._channel = channel
        self.fallback_dir = Path(fallback_dir) if fallback_dir is not None else None
        self.log = logging.getLogger("stampede.slack")

    # -- configuration ---------------------------------------------------------------------

    @cached_property
    def config(self) -> _SlackConfig | None:
        """Where and how to reach Slack, or ``None`` when nothing configures it."""
        return self._config_from_airflow() or self._config_from_env()

    def _airflow_wanted(self) -> bool:
        env_name = f"AIRFLOW_CONN_{self.conn_id.upper()}"
        return "airflow.sdk" in sys.modules or "airflow.models" in sys.modules or env_name in os.environ

    def _config_from_airflow(self) -> _SlackConfig | None:
        if not self._airflow_wanted():
            return None
        try:
            from airflow.sdk import BaseHook
        except ImportError:
            return None
        try:
            conn = BaseHook.get_connection(self.conn_id)
        except Exception as exc:  # not found, no backend, no API server: Slack then comes from the env
            self.log.debug("Airflow connection %r not available (%s)", self.conn_id, type(exc).__name__)
            return None
        if not conn.password:
            self.log.warning("Airflow connection %r has no token in its password field", self.conn_id)
            return None
        extra = conn.extra_dejson or {}
        try:
            timeout = float(_extra(extra, "timeout") or 0) or None
        except (TypeError, ValueError):
            self.log.warning("Airflow connection %r: ignoring a timeout that is not a number", self.conn_id)
            timeout = None
        return _SlackConfig(
            token=conn.password,
            base_url=_extra(extra, "base_url"),
            channel=_extra(extra, "channel"),
            timeout=timeout,
            proxy=_extra(extra, "proxy"),
            source=f"Airflow connection {self.conn_id!r}",
        )

    @staticmethod
    def _config_from_env() -> _SlackConfig | None:
        token = os.environ.get(ENV_TOKEN, "").strip()
        if not token:
            return None
        return _SlackConfig(
            token=token,
            base_url=os.environ.get(ENV_BASE_URL) or None,
            channel=None,
            timeout=None,
            proxy=None,
            source="environment",
        )

    @property
    def channel(self) -> str | None:
        """The channel messages go to."""
        config = self.config
        return self._channel or (config.channel if config else None) or os.environ.get(ENV_CHANNEL) or None

    @cached_property
    def _retry_handler(self) -> _BoundedRetryHandler:
        return _BoundedRetryHandler(
            max_retry_count=self.max_retries, interval_s=self.retry_interval_s, attempt_s=self._timeout,
        )

    @property
    def _timeout(self) -> float:
        config = self.config
        if config is not None and config.timeout is not None:
            return min(config.timeout, self.timeout_s)
        return self.timeout_s

    @cached_property
    def client(self) -> WebClient:
        """The slack-sdk client, built on first use from the configuration."""
        config = self.config
        if config is None:
            raise SlackNotConfiguredError(
                f"Slack is not configured: set the Airflow connection {self.conn_id!r} or {ENV_TOKEN}"
            )
        kwargs: dict[str, Any] = {
            "token": config.token,
            "timeout": self._timeout,
            "retry_handlers": [self._retry_handler],
            "logger": _SDK_LOG,
        }
        if config.base_url:
            kwargs["base_url"] = config.base_url
        if config.proxy:
            kwargs["proxy"] = config.proxy
        self.log.info("Slack client for %s (%s)", self._scrub(config.base_url or WebClient.BASE_URL), config.source)
        return WebClient(**kwargs)

    # -- public calls ----------------------------------------------------------------------

    def post_message(self, *, text: str, blocks: list | None = None) -> dict:
        """Post a message to the channel; never raises.

        :param text: The message (also the notification's fallback text); secrets are masked.
        :param blocks: Block Kit blocks, if any; secrets are masked.
        :return: Slack's answer (``ok`` True), or ``{"ok": False, "error": ..., "fallback_path": ...}``.
        """
        text = redact.text(str(text))
        blocks = redact.value(list(blocks)) if blocks else None
        record = {"kind": "message", "text": text, "blocks": blocks}
        return self._send(record, lambda client, channel: client.chat_postMessage(
            channel=channel, text=text, **({"blocks": blocks} if blocks else {}),
        ))

    def upload_file(self, *, path: Path, title: str, comment: str | None = None) -> dict:
        """Upload a file to the channel (``files_upload_v2``); never raises.

        :param path: The file to upload.
        :param title: Its title in Slack.
        :param comment: A message posted with it, if any; secrets are masked.
        :return: Slack's answer (``ok`` True), or ``{"ok": False, "error": ..., "fallback_path": ...}``.
        """
        path = Path(path)
        comment = redact.text(str(comment)) if comment else None
        record = {"kind": "file", "path": str(path), "title": title, "text": comment}

        def upload(client: WebClient, channel: str) -> Any:
            if not path.is_file():
                raise FileNotFoundError(f"no such file: {path}")
            return client.files_upload_v2(
                channel=channel, file=str(path), filename=path.name, title=title,
                **({"initial_comment": comment} if comment else {}),
            )

        return self._send(record, upload)

    # -- internals -------------------------------------------------------------------------

    def _send(self, record: dict[str, Any], call: Any) -> dict:
        try:
            config = self.config
            if config is None:
                return self._fallback(record, error="not_configured", detail="Slack is not configured", quiet=True)
            channel = self.channel
            if not channel:
                return self._fallback(record, error="no_channel", detail=f"no channel ({ENV_CHANNEL} unset)")
            client = self.client
            self._retry_handler.deadline = time.monotonic() + self.budget_s
            response = call(client, channel)
            self.log.info("Slack %s sent to %s", record["kind"], channel)
            return dict(response.data) if isinstance(response.data, dict) else {"ok": True}
        except SlackApiError as exc:
            answer = exc.response.data if exc.response is not None and isinstance(exc.response.data, dict) else {}
            error = str(answer.get("error") or "slack_api_error")
            return self._fallback(record, error=error, detail=f"Slack answered {error}")
        except FileNotFoundError as exc:
            return self._fallback(record, error="file_not_found", detail=str(exc))
        except OSError as exc:  # refused, reset, DNS, timeout (URLError and TimeoutError are OSErrors)
            return self._fallback(record, error="unreachable", detail=f"{type(exc).__name__}: {exc}")
        except Exception as exc:  # bad configuration, bad answer: a Slack problem must not fail the run
            return self._fallback(record, error="client_error", detail=f"{type(exc).__name__}: {exc}")

    def _scrub(self, text: str) -> str:
        config = self.__dict__.get("config")  # only what is already resolved: no lookup while failing
        if config is not None and config.token:
            text = text.replace(config.token, "***")
        return redact.text(text)

    def _resolved_channel(self) -> str | None:
        config = self.__dict__.get("config")  # no connection lookup while reporting a failure
        return self._channel or (config.channel if config else None) or os.environ.get(ENV_CHANNEL) or None

    def _fallback(self, record: dict[str, Any], *, error: str, detail: str, quiet: bool = False) -> dict:
        """Log the undelivered message and append it to the fallback file; never raises."""
        content = self._scrub(str(record.get("text") or record.get("title")))
        if quiet:  # not configured: the log is where the message is meant to be read
            self.log.info("Slack %s not sent (%s): %s", record["kind"], detail, content)
        else:
            self.log.warning("Slack %s not sent (%s); kept locally", record["kind"], self._scrub(detail))
            self.log.info("Undelivered Slack %s: %s", record["kind"], content)
        path = None
        if self.fallback_dir is not None:
            entry = {
                "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "error": error,
                "detail": self._scrub(detail),
                "channel": self._resolved_channel(),
                **record,
            }
            try:
                self.fallback_dir.mkdir(parents=True, exist_ok=True)
                path = self.fallback_dir / FALLBACK_FILE
                with path.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry, default=str) + "\n")
            except OSError as exc:
                self.log.warning("Could not write the Slack fallback file in %s: %s", self.fallback_dir, exc)
                path = None
        return {"ok": False, "error": error, "fallback_path": str(path) if path else None}
