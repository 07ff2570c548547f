"""A local Slack-compatible Web API server, for tests and demos: threads, edits, rate limits, Block Kit, buttons.

It answers what slack-sdk's ``WebClient(base_url=f"http://127.0.0.1:{port}/api/")``
sends for the calls Stampede makes, the way Slack does (``{"ok": true, ...}``):

- ``auth.test``
- ``chat.postMessage``: a channel *name* (``#loadtests``) is resolved to a channel ID, which the answer
  carries (as Slack's does); ``thread_ts`` must name a message of that channel (a reply to a reply joins
  the parent's thread), ``reply_broadcast`` also shows the reply in the channel;
- ``chat.update``: the channel must be the *ID* (a name answers ``channel_not_found``, as Slack does);
  the message keeps its ts and counts its edits;
- ``conversations.history`` (top-level messages and broadcast replies, newest first) and
  ``conversations.replies`` (the parent, then its replies): a thread can be read back;
- ``files.getUploadURLExternal``, the raw ``POST`` of the bytes, ``files.completeUploadExternal``:
  with ``channel_id`` and ``thread_ts`` the file is shared *in* that thread, as a reply carrying it.

What Slack enforces, the stand-in enforces, so a message that passes here passes there:

- **Block Kit limits** (:func:`block_errors`): at most 50 blocks; section text 3,000 characters and 10
  fields; header plain text 150; context 10 elements; actions 25 elements; button text 75, value
  2,000, url 3,000, ``action_id`` unique; ``block_id`` at most 255 and unique; one table per message,
  100 rows of at most 20 cells; a markdown block 12,000; and the aggregate ``msg_blocks_too_long``
  that Slack applies but does not document (measured by others at about 13,200 characters of text:
  slackapi/bolt-js#2509; the stand-in refuses more than 13,000). Top-level text over 40,000 characters
  is ``msg_too_long``. A refusal is ``invalid_blocks`` with the reasons in ``response_metadata``.
- **Rate limits on demand** (:meth:`SlackStandin.rate_limit`): for a while (seconds) or for a number of
  calls, the named methods answer HTTP 429 with a ``Retry-After`` header and ``ratelimited``; an
  **outage** (:meth:`SlackStandin.outage`) answers HTTP 503 the same way, with no ``Retry-After``.
- **Interactivity** (:meth:`SlackStandin.click`): presses a button of a stored message: builds the
  ``block_actions`` payload Slack sends, signs it with the signing secret
  (``X-Slack-Signature``, ``X-Slack-Request-Timestamp``) and POSTs it form-encoded to the app's
  Request URL. The payload's ``response_url`` points back here; what the app answers there is kept
  (:meth:`SlackStandin.responses`), ``replace_original`` edits the message, and a URL serves 5 answers
  within 30 minutes, as Slack documents for response URLs.

Every call is recorded in memory (``.calls``, ``.messages()``, ``.files()``), and optionally appended
to a JSONL file. When a token is configured, calls must carry it (``Authorization: Bearer <token>`` or
a ``token`` parameter): a missing token answers ``not_authed``, a wrong one ``invalid_auth``, as Slack
does. The token and the signing secret are never recorded.

Use it in tests::

    with SlackStandin(token="xoxb-test") as slack:
        WebClient(token="xoxb-test", base_url=slack.base_url).chat_postMessage(channel="#c", text="hi")
        assert slack.messages()[0]["text"] == "hi"

or for a demo, as a process (serves until SIGTERM)::

    python -m stampede.infra.slack_standin --port-file /tmp/slack.port --record /tmp/slack.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import itertools
import json
import logging
import secrets
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["Call", "ClickResult", "SlackStandin", "block_errors", "main"]

log = logging.getLogger("stampede.slack_standin")

API_PREFIX = "/api/"
UPLOAD_PREFIX = "/upload/v1/"
ACTIONS_PREFIX = "/actions/"
MAX_BODY = 64 * 1024 * 1024
TEAM_ID = "T0STANDIN"
BOT_USER = "U0STANDIN"

# Slack's limits (docs.slack.dev, Block Kit reference pages; the aggregate one from slackapi/bolt-js#2509)
MAX_BLOCKS = 50
MAX_TEXT = 40_000
MAX_BLOCKS_TEXT = 13_000
MAX_SECTION_TEXT = 3000
MAX_FIELDS = 10
MAX_FIELD_TEXT = 2000
MAX_HEADER = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2000
MAX_URL = 3000
MAX_ID = 255
MAX_MARKDOWN = 12_000
MAX_TABLE_ROWS = 100
MAX_TABLE_CELLS = 20
RESPONSE_URL_USES = 5
RESPONSE_URL_TTL_S = 30 * 60
SIGNATURE_VERSION = "v0"

_WRITE_METHODS = ("chat.postMessage", "chat.update", "files.getUploadURLExternal", "files.completeUploadExternal")


@dataclass
class Call:
    """One request the stand-in received (never holds the token)."""

    method: str  # Slack method ("chat.postMessage") or "upload" for the raw file POST
    params: dict[str, Any]
    at: float
    ok: bool
    error: str | None = None
    upload: dict[str, Any] | None = None  # for "upload": file_id, filename, length
    status: int = 200  # the HTTP status answered (429 while rate limited)


@dataclass(frozen=True)
class ClickResult:
    """What the app answered when a button was pressed, and the response URL Slack gave it."""

    status: int
    body: str
    response_url: str
    payload: dict[str, Any]


@dataclass
class _File:
    file_id: str
    filename: str
    length: int  # as announced in files.getUploadURLExternal
    alt_txt: str | None = None
    uploaded_bytes: int | None = None
    data: bytes = field(default=b"", repr=False)
    title: str | None = None
    completed: bool = False
    channel: str | None = None
    initial_comment: str | None = None
    thread_ts: str | None = None


@dataclass
class _Message:
    channel: str  # always the ID
    ts: str
    text: str
    blocks: list[dict[str, Any]] | None = None
    thread_ts: str | None = None  # the parent's ts, for a reply
    broadcast: bool = False
    files: list[str] = field(default_factory=list)
    edits: int = 0
    user: str = BOT_USER

    def to_dict(self, replies: int = 0) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "message", "user": self.user, "bot_id": "B0STANDIN", "ts": self.ts,
                                "text": self.text, "channel": self.channel}
        if self.blocks:
            data["blocks"] = self.blocks
        if self.thread_ts:
            data["thread_ts"] = self.thread_ts
            if self.broadcast:
                data["subtype"] = "thread_broadcast"
        elif replies:
            data["thread_ts"], data["reply_count"] = self.ts, replies
        if self.files:
            data["files"] = [{"id": f} for f in self.files]
        if self.edits:
            data["edited"] = {"user": self.user, "count": self.edits}
        return data


@dataclass
class _Fault:
    """A rate limit (429 with Retry-After) or an outage (503), for a while or for a number of calls."""

    until: float | None
    remaining: int | None
    retry_after: str | None
    methods: frozenset[str]
    status: int = 429

    def applies(self, method: str, now: float) -> bool:
        if method not in self.methods:
            return False
        if self.until is not None and now >= self.until:
            return False
        return self.remaining is None or self.remaining > 0


@dataclass
class _ResponseUrl:
    channel: str
    message_ts: str
    user: str
    created: float
    uses: int = 0


class SlackStandin:
    """A Slack Web API stand-in on 127.0.0.1 and a free port.

    :param token: The bearer token calls must carry; ``None`` accepts any call.
    :param host: The address to bind (loopback by default).
    :param port: The port to bind; ``0`` picks a free one.
    :param record_path: A JSONL file every call is appended to, if given.
    :param signing_secret: The app's signing secret for button clicks; a random one by default.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        record_path: Path | None = None,
        signing_secret: str | None = None,
    ) -> None:
        self.token = token
        self.host = host
        self.record_path = Path(record_path) if record_path else None
        self.signing_secret = signing_secret or secrets.token_hex(16)
        self.errors: dict[str, str] = {}
        """Forced failures for tests: Slack method -> error code it answers with (``ok: false``)."""
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._files: dict[str, _File] = {}
        self._ids = itertools.count(1)
        self._channels: dict[str, str] = {}  # name (without '#') -> ID
        self._known_ids: set[str] = set()
        self._store: dict[tuple[str, str], _Message] = {}  # (channel ID, ts) -> message, in posting order
        self._last_ts = 0.0
        self._faults: list[_Fault] = []
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._responses: list[dict[str, Any]] = []

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> SlackStandin:
        """Bind and serve in a background thread; returns ``self``."""
        if self._server is not None:
            return self
        server = ThreadingHTTPServer((self.host, self._requested_port), _handler_for(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.1},
            name=f"slack-standin-{self.port}", daemon=True,
        )
        self._thread.start()
        log.info("Slack stand-in listening on %s", self.base_url)
        return self

    def stop(self) -> None:
        """Stop serving and free the port (idempotent). What was received stays readable."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        log.info("Slack stand-in stopped")

    def __enter__(self) -> SlackStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the Slack stand-in is not running; call start() first")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What to pass as ``WebClient(base_url=...)``."""
        return f"{self.url}{API_PREFIX}"

    # -- what tests arrange -----------------------------------------------------------------

    def rate_limit(self, *, for_s: float | None = None, calls: int | None = None, retry_after: float | str = 1,
                   methods: Iterable[str] = _WRITE_METHODS) -> None:
        """Answer HTTP 429 ``ratelimited`` with ``Retry-After`` for a while, for ``calls`` calls, or both.

        :param retry_after: the header's value (Slack sends whole seconds; a string is sent as is).
        """
        if for_s is None and calls is None:
            raise ValueError("rate_limit: give for_s, calls or both")
        value = str(int(retry_after)) if isinstance(retry_after, (int, float)) and float(retry_after).is_integer() \
            else str(retry_after)
        self._fault(for_s=for_s, calls=calls, retry_after=value, methods=methods, status=429)

    def outage(self, *, for_s: float | None = None, calls: int | None = None,
               methods: Iterable[str] = _WRITE_METHODS) -> None:
        """Answer HTTP 503 (Slack is down) for a while, for ``calls`` calls, or both."""
        if for_s is None and calls is None:
            raise ValueError("outage: give for_s, calls or both")
        self._fault(for_s=for_s, calls=calls, retry_after=None, methods=methods, status=503)

    def _fault(self, *, for_s: float | None, calls: int | None, retry_after: str | None, methods: Iterable[str],
               status: int) -> None:
        with self._lock:
            self._faults.append(_Fault(until=time.monotonic() + for_s if for_s is not None else None, remaining=calls,
                                       retry_after=retry_after, methods=frozenset(methods), status=status))

    def channel_id(self, channel: str) -> str:
        """The ID of a channel name (``#loadtests`` or ``loadtests``), registering it on first use."""
        with self._lock:
            return self._resolve(channel, create=True) or channel

    # -- what was received -----------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every call received, in order (a copy)."""
        with self._lock:
            return list(self._calls)

    def messages(self) -> list[dict[str, Any]]:
        """The parameters of every accepted ``chat.postMessage`` (channel, text, blocks, ...), in order."""
        return [c.params for c in self.calls if c.method == "chat.postMessage" and c.ok]

    def updates(self) -> list[dict[str, Any]]:
        """The parameters of every accepted ``chat.update``, in order."""
        return [c.params for c in self.calls if c.method == "chat.update" and c.ok]

    def message(self, channel: str, ts: str) -> dict[str, Any]:
        """A message as it is now (after its edits), by channel (name or ID) and ts."""
        with self._lock:
            entry = self._store[(self._resolve(channel) or channel, ts)]
            return entry.to_dict(self._reply_count(entry))

    def history(self, channel: str) -> list[dict[str, Any]]:
        """What the channel shows, oldest first: top-level messages and broadcast replies."""
        with self._lock:
            cid = self._resolve(channel) or channel
            return [m.to_dict(self._reply_count(m)) for (c, _), m in self._store.items()
                    if c == cid and (m.thread_ts is None or m.broadcast)]

    def thread(self, channel: str, ts: str) -> list[dict[str, Any]]:
        """A thread: its parent first, then every reply in order (files shared in it included)."""
        with self._lock:
            cid = self._resolve(channel) or channel
            parent = self._store.get((cid, ts))
            if parent is None:
                return []
            replies = [m for (c, _), m in self._store.items() if c == cid and m.thread_ts == ts]
            return [parent.to_dict(len(replies))] + [m.to_dict() for m in replies]

    def files(self) -> list[dict[str, Any]]:
        """Every file announced, with what arrived: file_id, filename, title, length, ..."""
        with self._lock:
            return [_file_record(f) for f in self._files.values()]

    def file_bytes(self, file_id: str) -> bytes:
        """The bytes uploaded for ``file_id``."""
        with self._lock:
            return self._files[file_id].data

    def responses(self) -> list[dict[str, Any]]:
        """What apps sent to the response URLs of clicks (``text``, ``replace_original``, ``response_type``...)."""
        with self._lock:
            return [dict(r) for r in self._responses]

    def rate_limited(self) -> list[Call]:
        """The calls answered 429."""
        return [c for c in self.calls if c.status == 429]

    def delivered(self) -> list[Call]:
        """The calls that did something: accepted, not rate limited, not refused."""
        return [c for c in self.calls if c.ok]

    def reset(self) -> None:
        """Forget every call, file, message, rate limit and forced error."""
        with self._lock:
            self._calls.clear()
            self._files.clear()
            self._store.clear()
            self._faults.clear()
            self._responses.clear()
            self._response_urls.clear()
            self.errors.clear()

    # -- interactivity ----------------------------------------------------------------------

    def click(self, app_url: str, *, channel: str, ts: str, action_id: str, user_id: str = "U0ALICE",
              username: str = "alice", secret: str | None = None, timestamp: int | None = None,
              timeout_s: float = 30.0) -> ClickResult:
        """Press the button ``action_id`` of a stored message, as Slack does: a signed POST to ``app_url``.

        :param secret: sign with this secret instead of the stand-in's (a forged click).
        :param timestamp: the request's timestamp (default now; an old one is a replay).
        :raises LookupError: the message or the button does not exist.
        """
        with self._lock:
            cid = self._resolve(channel) or channel
            message = self._store.get((cid, ts))
            if message is None:
                raise LookupError(f"no message {ts} in {channel}")
            block_id, button = _find_button(message.blocks or [], action_id)
            token = secrets.token_urlsafe(12)
            self._response_urls[token] = _ResponseUrl(channel=cid, message_ts=ts, user=user_id,
                                                      created=time.monotonic())
            name = next((n for n, i in self._channels.items() if i == cid), cid)
            payload = {
                "type": "block_actions",
                "user": {"id": user_id, "username": username, "name": username, "team_id": TEAM_ID},
                "api_app_id": "A0STANDIN",
                "token": "deprecated-verification-token",
                "container": {"type": "message", "message_ts": ts, "channel_id": cid, "is_ephemeral": False,
                              **({"thread_ts": message.thread_ts} if message.thread_ts else {})},
                "trigger_id": f"{int(time.time())}.{secrets.randbelow(10**12)}.{secrets.token_hex(8)}",
                "team": {"id": TEAM_ID, "domain": "stampede-standin"},
                "enterprise": None,
                "is_enterprise_install": False,
                "channel": {"id": cid, "name": name},
                "message": message.to_dict(self._reply_count(message)),
                "state": {"values": {}},
                "response_url": f"{self.url}{ACTIONS_PREFIX}{token}",
                "actions": [{
                    "type": button.get("type", "button"), "action_id": action_id, "block_id": block_id,
                    "text": button.get("text"), **({"value": button["value"]} if "value" in button else {}),
                    **({"url": button["url"]} if "url" in button else {}),
                    **({"style": button["style"]} if "style" in button else {}),
                    "action_ts": f"{time.time():.6f}",
                }],
            }
        body = urlencode({"payload": json.dumps(payload)})
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = sign(secret or self.signing_secret, stamp, body)
        request = urllib.request.Request(app_url, data=body.encode(), method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": signature,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
        })
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as answer:
                return ClickResult(answer.status, answer.read().decode(), payload["response_url"], payload)
        except urllib.error.HTTPError as exc:
            with exc:
                return ClickResult(exc.code, exc.read().decode(), payload["response_url"], payload)

    # -- request handling (called from the server's threads) -------------------------------

    def _record(self, call: Call) -> None:
        with self._lock:
            self._record_locked(call)

    def _record_locked(self, call: Call) -> None:
        self._calls.append(call)
        if self.record_path is not None:
            self.record_path.parent.mkdir(parents=True, exist_ok=True)
            with self.record_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(asdict(call), default=str) + "\n")

    def _check_token(self, presented: str | None) -> str | None:
        if self.token is None:
            return None
        if not presented:
            return "not_authed"
        if presented != self.token:
            return "invalid_auth"
        return None

    def _faulty(self, method: str) -> _Fault | None:
        """The fault ``method`` meets now, if any (and count the call against it)."""
        with self._lock:
            now = time.monotonic()
            self._faults = [f for f in self._faults
                            if (f.until is None or now < f.until) and (f.remaining is None or f.remaining > 0)]
            for fault in self._faults:
                if fault.applies(method, now):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                    return fault
        return None

    def _api(self, method: str, params: dict[str, Any], presented: str | None
             ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Answer one Web API call: (HTTP status, JSON body, extra headers)."""
        error = self._check_token(presented)
        if error is None:
            fault = self._faulty(method)
            if fault is not None:
                code = "ratelimited" if fault.status == 429 else "service_unavailable"
                self._record(Call(method=method, params=params, at=time.time(), ok=False, error=code,
                                  status=fault.status))
                return fault.status, {"ok": False, "error": code}, \
                    ({"Retry-After": fault.retry_after} if fault.retry_after is not None else {})
            error = self.errors.get(method)
        if error is not None:
            self._record(Call(method=method, params=params, at=time.time(), ok=False, error=error))
            return 200, {"ok": False, "error": error}, {}
        handler = _METHODS.get(method)
        if handler is None:
            self._record(Call(method=method, params=params, at=time.time(), ok=False, error="unknown_method"))
            return 404, {"ok": False, "error": "unknown_method"}, {}
        with self._lock:
            body = handler(self, params)
            self._record_locked(Call(method=method, params=params, at=time.time(), ok=body["ok"],
                                     error=body.get("error")))
        return 200, body, {}

    # the handlers below run under self._lock

    def _resolve(self, channel: str | None, *, create: bool = False) -> str | None:
        """A channel's ID: names map to IDs (created on first use), ID-shaped strings are IDs."""
        if not channel:
            return None
        channel = str(channel)
        if _looks_like_id(channel):
            self._known_ids.add(channel)
            return channel
        name = channel.lstrip("#")
        if name not in self._channels:
            if not create:
                return None
            self._channels[name] = f"C{next(self._ids):08d}"
            self._known_ids.add(self._channels[name])
        return self._channels[name]

    def _next_ts(self) -> str:
        now = max(time.time(), self._last_ts + 0.000001)
        self._last_ts = now
        return f"{now:.6f}"

    def _reply_count(self, message: _Message) -> int:
        if message.thread_ts:
            return 0
        return sum(1 for (c, _), m in self._store.items() if c == message.channel and m.thread_ts == message.ts)

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True, "url": "https://stampede-standin.slack.com/", "team": "Stampede Stand-in",
            "user": "stampede", "team_id": TEAM_ID, "user_id": BOT_USER, "bot_id": "B0STANDIN",
            "is_enterprise_install": False,
        }

    def _content(self, params: dict[str, Any], *, require: bool = True) -> dict[str, Any] | None:
        """The error answer for a message's text and blocks, or ``None`` when Slack would take them."""
        for key in ("blocks", "attachments"):  # form bodies carry these as JSON strings
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except json.JSONDecodeError:
                    return {"ok": False, "error": f"invalid_{key}"}
        if require and not params.get("text") and not params.get("blocks") and not params.get("attachments"):
            return {"ok": False, "error": "no_text"}
        if len(str(params.get("text") or "")) > MAX_TEXT:
            return {"ok": False, "error": "msg_too_long"}
        if params.get("blocks"):
            code, problems = block_errors(params["blocks"])
            if code:
                return {"ok": False, "error": code, "errors": problems,
                        "response_metadata": {"messages": [f"[ERROR] {p}" for p in problems]}}
        return None

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = self._resolve(params.get("channel"), create=True)
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        problem = self._content(params)
        if problem:
            return problem
        thread_ts = params.get("thread_ts") or None
        if thread_ts:
            parent = self._store.get((channel, str(thread_ts)))
            if parent is None:
                return {"ok": False, "error": "thread_not_found"}
            thread_ts = parent.thread_ts or parent.ts  # a reply to a reply joins the parent's thread
        message = _Message(channel=channel, ts=self._next_ts(), text=str(params.get("text") or ""),
                           blocks=params.get("blocks") or None, thread_ts=thread_ts,
                           broadcast=bool(thread_ts) and _truthy(params.get("reply_broadcast")))
        self._store[(channel, message.ts)] = message
        return {"ok": True, "channel": channel, "ts": message.ts, "message": message.to_dict()}

    def _update(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        if not _looks_like_id(channel) or channel not in self._known_ids:
            return {"ok": False, "error": "channel_not_found"}
        message = self._store.get((channel, str(params.get("ts") or "")))
        if message is None:
            return {"ok": False, "error": "message_not_found"}
        problem = self._content(params)
        if problem:
            return problem
        message.text = str(params.get("text") or "")
        message.blocks = params.get("blocks") or None
        message.edits += 1
        return {"ok": True, "channel": channel, "ts": message.ts, "text": message.text,
                "message": message.to_dict(self._reply_count(message))}

    def _history(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        if channel not in self._known_ids:
            return {"ok": False, "error": "channel_not_found"}
        shown = [m.to_dict(self._reply_count(m)) for (c, _), m in self._store.items()
                 if c == channel and (m.thread_ts is None or m.broadcast)]
        return {"ok": True, "messages": list(reversed(shown)), "has_more": False}

    def _replies(self, params: dict[str, Any]) -> dict[str, Any]:
        channel = str(params.get("channel") or "")
        if channel not in self._known_ids:
            return {"ok": False, "error": "channel_not_found"}
        parent = self._store.get((channel, str(params.get("ts") or "")))
        if parent is None:
            return {"ok": False, "error": "thread_not_found"}
        root = parent.thread_ts or parent.ts
        head = self._store[(channel, root)]
        replies = [m.to_dict() for (c, _), m in self._store.items() if c == channel and m.thread_ts == root]
        return {"ok": True, "messages": [head.to_dict(len(replies)), *replies], "has_more": False}

    def _get_upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = params.get("filename")
        try:
            length = int(params.get("length"))
        except (TypeError, ValueError):
            return {"ok": False, "error": "invalid_arguments"}
        if not filename:
            return {"ok": False, "error": "invalid_arguments"}
        file_id = f"F{next(self._ids):08d}"
        self._files[file_id] = _File(
            file_id=file_id, filename=str(filename), length=length, alt_txt=params.get("alt_txt"),
        )
        return {"ok": True, "upload_url": f"{self.url}{UPLOAD_PREFIX}{file_id}", "file_id": file_id}

    def _upload(self, file_id: str, data: bytes) -> tuple[int, str]:
        with self._lock:
            entry = self._files.get(file_id)
            if entry is not None:
                entry.data = data
                entry.uploaded_bytes = len(data)
            upload = {"file_id": file_id, "filename": entry.filename if entry else None, "length": len(data)}
            ok = entry is not None
            self._record_locked(Call(method="upload", params={}, at=time.time(), ok=ok,
                                     error=None if ok else "file_not_found", upload=upload))
        return (200, f"OK - {len(data)}") if ok else (404, "file_not_found")

    def _complete_upload(self, params: dict[str, Any]) -> dict[str, Any]:
        raw = params.get("files")
        try:
            items = json.loads(raw) if isinstance(raw, str) else raw
        except json.JSONDecodeError:
            return {"ok": False, "error": "invalid_arguments"}
        if not isinstance(items, list) or not items:
            return {"ok": False, "error": "invalid_arguments"}
        channel = params.get("channel_id") or params.get("channels")
        if channel and (not _looks_like_id(str(channel))):
            return {"ok": False, "error": "invalid_channel"}  # Slack wants the ID here, not a name
        thread_ts = params.get("thread_ts") or None
        if thread_ts and (not channel or (str(channel), str(thread_ts)) not in self._store):
            return {"ok": False, "error": "invalid_thread_ts"}
        entries = []
        for item in items:
            entry = self._files.get(str(item.get("id")))
            if entry is None:
                return {"ok": False, "error": "file_not_found"}
            if entry.uploaded_bytes is None:
                return {"ok": False, "error": "file_upload_not_completed"}
            entries.append((entry, item))
        done = []
        for entry, item in entries:
            entry.title = item.get("title") or entry.filename
            entry.completed = True
            entry.channel = channel
            entry.initial_comment = params.get("initial_comment")
            entry.thread_ts = thread_ts
            done.append({
                "id": entry.file_id, "name": entry.filename, "title": entry.title,
                "size": entry.uploaded_bytes, "channels": [entry.channel] if entry.channel else [],
                "permalink": f"{self.url}/files/{entry.file_id}/{entry.filename}",
            })
        if channel:  # the file is shared: a message carrying it, in the thread when one is named
            self._known_ids.add(str(channel))
            message = _Message(channel=str(channel), ts=self._next_ts(),
                               text=str(params.get("initial_comment") or ""),
                               thread_ts=self._store[(str(channel), str(thread_ts))].thread_ts or str(thread_ts)
                               if thread_ts else None,
                               files=[e.file_id for e, _ in entries])
            self._store[(message.channel, message.ts)] = message
        return {"ok": True, "files": done}

    def _respond(self, token: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """An app's answer to a click's response URL."""
        try:
            answer = json.loads(body.decode("utf-8") or "{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return 400, {"ok": False, "error": "invalid_payload"}
        with self._lock:
            url = self._response_urls.get(token)
            if url is None:
                return 404, {"ok": False, "error": "no_such_url"}
            if time.monotonic() - url.created > RESPONSE_URL_TTL_S:
                return 404, {"ok": False, "error": "expired_url"}
            if url.uses >= RESPONSE_URL_USES:
                return 404, {"ok": False, "error": "used_url"}
            if answer.get("blocks"):
                code, problems = block_errors(answer["blocks"])
                if code:
                    return 400, {"ok": False, "error": code, "errors": problems}
            url.uses += 1
            self._responses.append({**answer, "channel": url.channel, "message_ts": url.message_ts,
                                    "user": url.user})
            message = self._store.get((url.channel, url.message_ts))
            if message is not None and _truthy(answer.get("delete_original")):
                del self._store[(url.channel, url.message_ts)]
            elif message is not None and _truthy(answer.get("replace_original")) \
                    and answer.get("response_type") != "ephemeral":
                message.text = str(answer.get("text") or "")
                message.blocks = answer.get("blocks") or None
                message.edits += 1
            elif answer.get("response_type") == "in_channel":
                reply = _Message(channel=url.channel, ts=self._next_ts(), text=str(answer.get("text") or ""),
                                 blocks=answer.get("blocks") or None,
                                 thread_ts=message.thread_ts if message else None)
                self._store[(reply.channel, reply.ts)] = reply
        return 200, {"ok": True}


_METHODS = {
    "auth.test": SlackStandin._auth_test,
    "chat.postMessage": SlackStandin._post_message,
    "chat.update": SlackStandin._update,
    "conversations.history": SlackStandin._history,
    "conversations.replies": SlackStandin._replies,
    "files.getUploadURLExternal": SlackStandin._get_upload_url,
    "files.completeUploadExternal": SlackStandin._complete_upload,
}


def sign(secret: str, timestamp: str, body: str) -> str:
    """Slack's request signature: ``v0=`` + hex HMAC-SHA256 of ``v0:<timestamp>:<body>``."""
    base = f"{SIGNATURE_VERSION}:{timestamp}:{body}".encode()
    return f"{SIGNATURE_VERSION}=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def _looks_like_id(channel: str) -> bool:
    return len(channel) >= 2 and channel[0] in "CGD" and channel[1:].isalnum() and channel.upper() == channel


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")


def _find_button(blocks: list[dict[str, Any]], action_id: str) -> tuple[str | None, dict[str, Any]]:
    for block in blocks:
        elements = block.get("elements", []) if block.get("type") == "actions" else [block.get("accessory") or {}]
        for element in elements:
            if element.get("action_id") == action_id:
                return block.get("block_id"), element
    raise LookupError(f"no button {action_id!r} on the message")


def _texts(value: Any) -> Iterable[str]:
    """Every ``text`` string inside a block (what Slack counts toward its aggregate limit)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "text" and isinstance(item, str):
                yield item
            else:
                yield from _texts(item)
    elif isinstance(value, list):
        for item in value:
            yield from _texts(item)


def _text_object_errors(obj: Any, where: str, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn") or not isinstance(obj.get("text"), str):
        return [f"must be a text object [json-pointer:{where}]"]
    problems = []
    if plain_only and obj["type"] != "plain_text":
        problems.append(f"must be plain_text [json-pointer:{where}/type]")
    if not obj["text"]:
        problems.append(f"must be more than 0 characters [json-pointer:{where}/text]")
    if len(obj["text"]) > limit:
        problems.append(f"must be less than {limit + 1} characters [json-pointer:{where}/text]")
    return problems


def _id_errors(value: Any, seen: set[Any], where: str) -> list[str]:
    """A ``block_id`` or an ``action_id``: at most 255 characters, unique in the message."""
    if value is None:
        return []
    problems = []
    if len(str(value)) > MAX_ID:
        problems.append(f"must be less than {MAX_ID + 1} characters [json-pointer:{where}]")
    if value in seen:
        problems.append(f"must be unique in the message [json-pointer:{where}]")
    seen.add(value)
    return problems


def _element_errors(element: dict[str, Any], where: str, action_ids: set[str]) -> list[str]:
    problems = []
    if element.get("type") != "button":
        return problems
    problems += _text_object_errors(element.get("text"), f"{where}/text", MAX_BUTTON_TEXT, plain_only=True)
    problems += _id_errors(element.get("action_id"), action_ids, f"{where}/action_id")
    if len(str(element.get("value", ""))) > MAX_BUTTON_VALUE:
        problems.append(f"must be less than {MAX_BUTTON_VALUE + 1} characters [json-pointer:{where}/value]")
    url = element.get("url")
    if url is not None and (len(url) > MAX_URL or not str(url).startswith(("http://", "https://"))):
        problems.append(f"must be an http(s) URL of at most {MAX_URL} characters [json-pointer:{where}/url]")
    if element.get("style") not in (None, "primary", "danger"):
        problems.append(f"must be primary or danger [json-pointer:{where}/style]")
    return problems


def block_errors(blocks: Any) -> tuple[str | None, list[str]]:
    """Slack's verdict on a message's blocks: ``(None, [])``, or an error code and the reasons.

    The codes are Slack's: ``invalid_blocks``, ``msg_blocks_too_long``, ``only_one_table_allowed``.
    """
    if not isinstance(blocks, list):
        return "invalid_blocks", ["must be an array [json-pointer:/blocks]"]
    problems: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"must be less than {MAX_BLOCKS + 1} items [json-pointer:/blocks]")
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    tables = 0
    for i, block in enumerate(blocks):
        where = f"/blocks/{i}"
        if not isinstance(block, dict):
            problems.append(f"must be an object [json-pointer:{where}]")
            continue
        kind = block.get("type")
        problems += _id_errors(block.get("block_id"), block_ids, f"{where}/block_id")
        if kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"must provide text or fields [json-pointer:{where}]")
            if "text" in block:
                problems += _text_object_errors(block["text"], f"{where}/text", MAX_SECTION_TEXT)
            fields = block.get("fields") or []
            if len(fields) > MAX_FIELDS:
                problems.append(f"must be less than {MAX_FIELDS + 1} items [json-pointer:{where}/fields]")
            for j, item in enumerate(fields):
                problems += _text_object_errors(item, f"{where}/fields/{j}", MAX_FIELD_TEXT)
            if isinstance(block.get("accessory"), dict):
                problems += _element_errors(block["accessory"], f"{where}/accessory", action_ids)
        elif kind == "header":
            problems += _text_object_errors(block.get("text"), f"{where}/text", MAX_HEADER, plain_only=True)
        elif kind == "context":
            elements = block.get("elements") or []
            if not elements or len(elements) > MAX_CONTEXT_ELEMENTS:
                problems.append(f"must have 1 to {MAX_CONTEXT_ELEMENTS} items [json-pointer:{where}/elements]")
            for j, item in enumerate(elements):
                if isinstance(item, dict) and item.get("type") in ("plain_text", "mrkdwn"):
                    problems += _text_object_errors(item, f"{where}/elements/{j}", MAX_SECTION_TEXT)
        elif kind == "actions":
            elements = block.get("elements") or []
            if not elements or len(elements) > MAX_ACTIONS_ELEMENTS:
                problems.append(f"must have 1 to {MAX_ACTIONS_ELEMENTS} items [json-pointer:{where}/elements]")
            for j, item in enumerate(elements):
                problems += _element_errors(item if isinstance(item, dict) else {}, f"{where}/elements/{j}",
                                            action_ids)
        elif kind == "table":
            tables += 1
            rows = block.get("rows")
            if not isinstance(rows, list) or not rows or len(rows) > MAX_TABLE_ROWS:
                problems.append(f"must have 1 to {MAX_TABLE_ROWS} rows [json-pointer:{where}/rows]")
                rows = rows if isinstance(rows, list) else []
            for j, row in enumerate(rows):
                if not isinstance(row, list) or not row or len(row) > MAX_TABLE_CELLS:
                    problems.append(f"must have 1 to {MAX_TABLE_CELLS} cells [json-pointer:{where}/rows/{j}]")
                    continue
                for k, cell in enumerate(row):
                    if not isinstance(cell, dict) or cell.get("type") not in ("raw_text", "rich_text"):
                        problems.append(f"must be a raw_text or rich_text cell [json-pointer:{where}/rows/{j}/{k}]")
                    elif cell["type"] == "raw_text" and not isinstance(cell.get("text"), str):
                        problems.append(f"must have a text [json-pointer:{where}/rows/{j}/{k}/text]")
            if len(block.get("column_settings") or []) > MAX_TABLE_CELLS:
                problems.append(f"must be less than {MAX_TABLE_CELLS + 1} items [json-pointer:{where}/column_settings]")
        elif kind == "markdown":
            if not isinstance(block.get("text"), str) or len(block["text"]) > MAX_MARKDOWN:
                problems.append(f"must be a string of at most {MAX_MARKDOWN} characters [json-pointer:{where}/text]")
        elif kind in ("divider", "image", "rich_text", "file", "video", "input"):
            pass
        else:
            problems.append(f"unsupported type {kind!r} [json-pointer:{where}/type]")
    if problems:
        return "invalid_blocks", problems
    if tables > 1:
        return "only_one_table_allowed", [f"a message can hold one table, not {tables}"]
    total = sum(len(t) for t in _texts(blocks))
    if total > MAX_BLOCKS_TEXT:
        return "msg_blocks_too_long", [f"{total} characters of text in blocks (at most about {MAX_BLOCKS_TEXT})"]
    return None, []


def _file_record(f: _File) -> dict[str, Any]:
    return {
        "file_id": f.file_id, "filename": f.filename, "title": f.title, "length": f.length,
        "uploaded_bytes": f.uploaded_bytes, "alt_txt": f.alt_txt, "completed": f.completed,
        "channel": f.channel, "initial_comment": f.initial_comment, "thread_ts": f.thread_ts,
    }


def _parse_body(content_type: str, body: bytes) -> dict[str, Any]:
    """Decode a JSON, form-encoded or multipart body into a flat dict."""
    mime = content_type.split(";", 1)[0].strip().lower()
    if not body:
        return {}
    if mime == "application/json":
        data = json.loads(body.decode("utf-8"))
        return data if isinstance(data, dict) else {}
    if mime == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode("latin-1") + body
        )
        fields: dict[str, Any] = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not name:
                continue
            payload = part.get_payload(decode=True) or b""
            if part.get_filename():
                fields[name] = {"filename": part.get_filename(), "length": len(payload)}
            else:
                fields[name] = payload.decode("utf-8", errors="replace")
        return fields
    return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))


def _handler_for(standin: SlackStandin) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "SlackStandin/1.0"

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            self._handle()

        def do_GET(self) -> None:  # noqa: N802
            self._handle()

        def _handle(self) -> None:
            split = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(413, {"ok": False, "error": "request_too_large"})
                return
            body = self.rfile.read(length) if length else b""
            if split.path.startswith(UPLOAD_PREFIX):
                status, text = standin._upload(split.path[len(UPLOAD_PREFIX):], body)
                self._send_text(status, text)
                return
            if split.path.startswith(ACTIONS_PREFIX):
                status, answer = standin._respond(split.path[len(ACTIONS_PREFIX):], body)
                self._send(status, answer)
                return
            if not split.path.startswith(API_PREFIX):
                self._send(404, {"ok": False, "error": "unknown_method"})
                return
            try:
                params = dict(parse_qsl(split.query, keep_blank_values=True))
                params.update(_parse_body(self.headers.get("Content-Type", ""), body))
            except (ValueError, UnicodeDecodeError):
                self._send(200, {"ok": False, "error": "invalid_form_data"})
                return
            presented = params.pop("token", None)
            auth = self.headers.get("Authorization", "")
            if auth.lower().startswith("bearer "):
                presented = auth[7:].strip()
            status, answer, headers = standin._api(split.path[len(API_PREFIX):], params, presented)
            self._send(status, answer, headers)

        def _send(self, status: int, answer: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(answer).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def _send_text(self, status: int, text: str) -> None:
            data = text.encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (base signature)
            # The request line carries no token (slack-sdk sends it in a header); keep it quiet.
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGTERM/SIGINT; write the port to ``--port-file`` once listening."""
    parser = argparse.ArgumentParser(prog="python -m stampede.infra.slack_standin", description=__doc__.splitlines()[0])
    parser.add_argument("--port-file", type=Path, required=True, help="file to write the bound port to")
    parser.add_argument("--port", type=int, default=0, help="port to bind (default: a free one)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--token", default=None, help="token calls must carry (default: accept any)")
    parser.add_argument("--record", type=Path, default=None, help="append every call to this JSONL file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    standin = SlackStandin(token=args.token, host=args.host, port=args.port, record_path=args.record)
    standin.start()
    try:
        tmp = args.port_file.with_name(args.port_file.name + ".tmp")
        tmp.write_text(f"{standin.port}\n")
        tmp.replace(args.port_file)  # atomic: a reader never sees a half-written port
        print(standin.base_url, flush=True)
        while not stop.wait(0.5):
            pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
