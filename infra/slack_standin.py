"""A local Slack-compatible Web API server, for tests and demos.

It answers what slack-sdk's ``WebClient(base_url=f"http://127.0.0.1:{port}/api/")``
sends for the calls Stampede makes, the way Slack does (``{"ok": true, ...}``):

- ``auth.test``
- ``chat.postMessage`` (JSON or form body)
- ``files.getUploadURLExternal`` -> an ``upload_url`` pointing back at this server, and a ``file_id``
- the raw ``POST`` of the file's bytes to that URL (slack-sdk sends the bytes as the body)
- ``files.completeUploadExternal`` (``files`` is a JSON list of ``{id, title}``)

Every call is recorded in memory (``.calls``, ``.messages()``, ``.files()``), and
optionally appended to a JSONL file. When a token is configured, calls must carry
it (``Authorization: Bearer <token>`` or a ``token`` parameter): a missing token
answers ``not_authed``, a wrong one ``invalid_auth``, as Slack does. The token is
never recorded.

Use it in tests::

    with SlackStandin(token="xoxb-test") as slack:
        WebClient(token="xoxb-test", base_url=slack.base_url).chat_postMessage(channel="#c", text="hi")
        assert slack.messages()[0]["text"] == "hi"

or for a demo, as a process (serves until SIGTERM)::

    python -m stampede.infra.slack_standin --port-file /tmp/slack.port --record /tmp/slack.jsonl
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

__all__ = ["Call", "SlackStandin", "main"]

log = logging.getLogger("stampede.slack_standin")

API_PREFIX = "/api/"
UPLOAD_PREFIX = "/upload/v1/"
MAX_BODY = 64 * 1024 * 1024


@dataclass
class Call:
    """One request the stand-in received (never holds the token)."""

    method: str  # Slack method ("chat.postMessage") or "upload" for the raw file POST
    params: dict[str, Any]
    at: float
    ok: bool
    error: str | None = None
    upload: dict[str, Any] | None = None  # for "upload": file_id, filename, length


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


class SlackStandin:
    """A Slack Web API stand-in on 127.0.0.1 and a free port.

    :param token: The bearer token calls must carry; ``None`` accepts any call.
    :param host: The address to bind (loopback by default).
    :param port: The port to bind; ``0`` picks a free one.
    :param record_path: A JSONL file every call is appended to, if given.
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        record_path: Path | None = None,
    ) -> None:
        self.token = token
        self.host = host
        self.record_path = Path(record_path) if record_path else None
        self.errors: dict[str, str] = {}
        """Forced failures for tests: Slack method -> error code it answers with (``ok: false``)."""
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        self._files: dict[str, _File] = {}
        self._ids = itertools.count(1)

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
        """Stop serving and free the port (idempotent)."""
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

    # -- what was received -----------------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every call received, in order (a copy)."""
        with self._lock:
            return list(self._calls)

    def messages(self) -> list[dict[str, Any]]:
        """The parameters of every accepted ``chat.postMessage`` (channel, text, blocks, ...)."""
        return [c.params for c in self.calls if c.method == "chat.postMessage" and c.ok]

    def files(self) -> list[dict[str, Any]]:
        """Every file announced, with what arrived: file_id, filename, title, length, ..."""
        with self._lock:
            return [_file_record(f) for f in self._files.values()]

    def file_bytes(self, file_id: str) -> bytes:
        """The bytes uploaded for ``file_id``."""
        with self._lock:
            return self._files[file_id].data

    def reset(self) -> None:
        """Forget every call, file and forced error."""
        with self._lock:
            self._calls.clear()
            self._files.clear()
            self.errors.clear()

    # -- request handling (called from the server's threads) -------------------------------

    def _record(self, call: Call) -> None:
        with self._lock:
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

    def _api(self, method: str, params: dict[str, Any], presented: str | None) -> tuple[int, dict[str, Any]]:
        """Answer one Web API call: (HTTP status, JSON body)."""
        error = self._check_token(presented)
        if error is None:
            error = self.errors.get(method)
        if error is not None:
            self._record(Call(method=method, params=params, at=time.time(), ok=False, error=error))
            return 200, {"ok": False, "error": error}
        handler = _METHODS.get(method)
        if handler is None:
            self._record(Call(method=method, params=params, at=time.time(), ok=False, error="unknown_method"))
            return 404, {"ok": False, "error": "unknown_method"}
        body = handler(self, params)
        self._record(Call(method=method, params=params, at=time.time(), ok=body["ok"], error=body.get("error")))
        return 200, body

    def _auth_test(self, params: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True, "url": "https://stampede-standin.slack.com/", "team": "Stampede Stand-in",
            "user": "stampede", "team_id": "T0STANDIN", "user_id": "U0STANDIN", "bot_id": "B0STANDIN",
            "is_enterprise_install": False,
        }

    def _post_message(self, params: dict[str, Any]) -> dict[str, Any]:
        for key in ("blocks", "attachments"):  # form bodies carry these as JSON strings
            if isinstance(params.get(key), str):
                try:
                    params[key] = json.loads(params[key])
                except json.JSONDecodeError:
                    return {"ok": False, "error": f"invalid_{key}"}
        channel = params.get("channel")
        if not channel:
            return {"ok": False, "error": "channel_not_found"}
        if not params.get("text") and not params.get("blocks") and not params.get("attachments"):
            return {"ok": False, "error": "no_text"}
        ts = f"{time.time():.6f}"
        message = {"type": "message", "user": "U0STANDIN", "bot_id": "B0STANDIN", "ts": ts,
                   "text": params.get("text", "")}
        if params.get("blocks"):
            message["blocks"] = params["blocks"]
        return {"ok": True, "channel": channel, "ts": ts, "message": message}

    def _get_upload_url(self, params: dict[str, Any]) -> dict[str, Any]:
        filename = params.get("filename")
        try:
            length = int(params.get("length"))
        except (TypeError, ValueError):
            return {"ok": False, "error": "invalid_arguments"}
        if not filename:
            return {"ok": False, "error": "invalid_arguments"}
        with self._lock:
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
        self._record(Call(method="upload", params={}, at=time.time(), ok=ok,
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
        done = []
        with self._lock:
            for item in items:
                entry = self._files.get(str(item.get("id")))
                if entry is None:
                    return {"ok": False, "error": "file_not_found"}
                if entry.uploaded_bytes is None:
                    return {"ok": False, "error": "file_upload_not_completed"}
                entry.title = item.get("title") or entry.filename
                entry.completed = True
                entry.channel = params.get("channel_id") or params.get("channels")
                entry.initial_comment = params.get("initial_comment")
                entry.thread_ts = params.get("thread_ts")
                done.append({
                    "id": entry.file_id, "name": entry.filename, "title": entry.title,
                    "size": entry.uploaded_bytes, "channels": [entry.channel] if entry.channel else [],
                    "permalink": f"{self.url}/files/{entry.file_id}/{entry.filename}",
                })
        return {"ok": True, "files": done}


_METHODS = {
    "auth.test": SlackStandin._auth_test,
    "chat.postMessage": SlackStandin._post_message,
    "files.getUploadURLExternal": SlackStandin._get_upload_url,
    "files.completeUploadExternal": SlackStandin._complete_upload,
}


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
            status, answer = standin._api(split.path[len(API_PREFIX):], params, presented)
            self._send(status, answer)

        def _send(self, status: int, answer: dict[str, Any]) -> None:
            data = json.dumps(answer).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
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
