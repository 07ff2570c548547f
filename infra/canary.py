"""A canary target on loopback that counts every request it receives, with times.

Safety tests point a refused run at it and assert it saw nothing, or flip the
kill switch during a run and measure when the last request arrived.

    with Canary() as canary:            # http://127.0.0.1:<free port>/v1
        ...
        assert canary.hits(exclude_health=True) == 0

``/v1/health`` answers 200 (or ``health_status``); every other path answers
200 ``{"items": [], "total": 0}``. Threads only (no subprocess): it is tiny.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

__all__ = ["Canary", "Hit"]

BODY = json.dumps({"items": [], "total": 0}).encode()


class Hit(tuple):
    """(time, method, path)."""

    @property
    def t(self) -> float:
        return self[0]

    @property
    def path(self) -> str:
        return self[2]


class Canary:
    """An HTTP/1.1 keep-alive server on 127.0.0.1 (or ``host``), port chosen by the kernel, that records each request.

    :param health_status: what ``/health`` answers (set ``.health_status`` later to make it fail).
    :param delay_s: how long every other request takes (counted when it arrives).
    """

    def __init__(self, *, health_status: int = 200, delay_s: float = 0.0, host: str = "127.0.0.1", port: int = 0) -> None:
        self.health_status = health_status
        self.delay_s = delay_s
        self.host, self.port = host, port  # e.g. 127.0.0.2: a second loopback address standing in for production
        self.requests: list[Hit] = []
        self.connections = 0  # TCP connections accepted, requests or not (a raw socket that sends nothing counts)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "canary not started"
        return f"http://{self.host}:{self._server.server_address[1]}/v1"

    def hits(self, *, exclude_health: bool = False) -> int:
        with self._lock:
            return sum(1 for h in self.requests if not (exclude_health and h.path.endswith("/health")))

    def last_hit_at(self, *, exclude_health: bool = True) -> float | None:
        with self._lock:
            times = [h.t for h in self.requests if not (exclude_health and h.path.endswith("/health"))]
        return max(times) if times else None

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append(Hit((time.time(), method, path)))

    def start(self) -> Self:
        canary = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                with canary._lock:
                    canary.connections += 1
                super().setup()

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                canary.record(self.command, self.path)
                if canary.delay_s and not self.path.split("?")[0].endswith("/health"):
                    time.sleep(canary.delay_s)  # a request in flight for that long (one thread per connection)
                status = canary.health_status if self.path.split("?")[0].endswith("/health") else 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                self.wfile.write(BODY)

            do_GET = do_POST = do_PATCH = do_DELETE = _answer

            def log_message(self, *_args) -> None:
                pass

        self._server = _QuietServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


class _QuietServer(ThreadingHTTPServer):
    """A client that goes away mid-request (a load generator SIGKILLed by a test) is no error of the canary's."""

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)
