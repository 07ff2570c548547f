"""``JourneyHttpClient``: one keep-alive HTTP/1.1 connection per user, timed and reported like Locust's own.

Locust's ``FastHttpSession`` reaches the socket through four layers
(``FastHttpSession`` → ``LocustUserAgent`` → ``UserAgent`` → ``HTTPClient``)
that the journeys do not need: retries, redirects, cookie jars, compression and
``catch_response`` context managers. On this project's 2-core machine those
layers cost about 40 % of a generator's CPU per request (``make bench``), and a
generator short of CPU reports its own queueing as the target's latency. This
client talks to geventhttpclient's ``HTTPClient`` directly and fires Locust's
``request`` event once per request, so Locust's statistics and Stampede's
histograms see exactly what they see with ``FastHttpUser``:

- ``response_time`` runs from before the connection is taken from the pool to
  the last byte of the body (as ``FastHttpSession`` without ``stream``);
- a connection error or timeout is a response with ``status_code == 0`` and
  the exception in ``error``;
- a redirect is never followed: it is returned as the 3xx it is.

The request head is written here, not by ``HTTPClient.request``: that merges the
default and the caller's headers into case-insensitive ``Headers`` twice and checks
every name and value with a regular expression, about a fifth of a generator's
Python time per request (cProfile, ``make bench``'s journey). The head here carries
the same fields (``User-Agent``, ``Accept``, the caller's, ``Host``,
``Content-Length``), and what could split it (a control character or space in the
URL, CR/LF in a header value) is still refused before anything is sent.

The answer is read by geventhttpclient's own parser (llhttp, in C), which frames it
(``Content-Length``, chunked, to the close; interim 1xx skipped) and says whether the
connection stays open; only the status and the body are kept. geventhttpclient's
response object also builds a case-insensitive header table through four Python
callbacks per header, and its pool a semaphore and a queue around a connection
that only this user ever uses: with both, a fifth of the generator's CPU went into
reading answers (py-spy, the peers bench). The user's one connection is held here;
before it is reused it is checked as the pool checks it (``idle_watch``, one poller per connection),
and one that the target had closed is retried as ``HTTPClient`` retries it
(idempotent methods only). Each wait on it (a ``recv``, a ``send`` that finds the
buffer full) is bounded by ``network_timeout`` with the user's one libev timer,
re-armed per wait, where gevent's socket timeout built a ``Timeout`` per wait; a wait
that runs out is ``TimeoutError: timed out``, as before. A caller's header that this head does not write
itself (``Host``, ``Accept``, ...) or a ``HEAD`` goes through ``HTTPClient.request``
on the same connection.

The caller judges the response and reports it with ``report``; a request that
is never reported is not counted, so every path through a journey step reports.
"""

from __future__ import annotations

import errno
import json as jsonlib
import re
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

import gevent.socket
import msgspec
from gevent import get_hub, getcurrent
from geventhttpclient import HTTPClient
from geventhttpclient._parser import HTTPResponseParser
from geventhttpclient.response import HTTPConnectionClosed, HTTPParseError

from stampede.load.fixes import idle_watch, patch_connection_pool

__all__ = ["JourneyHttpClient", "JourneyResponse"]

USER_AGENT = "stampede-journeys"  # so the target's logs tell load-test traffic apart
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f]")  # would end or split the request line
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # would end or split a header line
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 9.2.2: may be retried
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})  # Content-Length: 0 when sent without one (RFC 9112 6.3)
_OWN_FIELDS = frozenset({"host", "user-agent", "accept", "content-length", "transfer-encoding", "expect"})
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.1: a token
_QUERY_CACHE_MAX = 4096
_RETRIES = 2  # as HTTPClient with a pool of one connection: its size + 1
_checked_names: set[str] = set()  # header names already found to be tokens


class _Answer(HTTPResponseParser):
    """One answer as llhttp parses it: its status, its body, and whether the connection stays open.

    The parser calls every callback it knows; the ones for the status text and the
    headers are C callables that ignore what they are given (no Python frame per header).
    """

    _on_message_begin = _on_headers_complete = tuple  # () is false: carry on, the body follows
    _on_status = _on_header_field = _on_header_value = {}.get  # None

    def __init__(self) -> None:
        self.body = bytearray()
        self.complete = False

    def _on_body(self, chunk: bytearray) -> None:
        self.body += chunk

    def _on_message_complete(self) -> None:
        if self.get_code() >= 200:  # an interim 1xx is followed by the final answer on the same connection
            self.complete = True


def _recv(sock, size: int, timer) -> bytes:
    """``sock.recv(size)``, raising ``TimeoutError('timed out')`` (as a socket timeout) when nothing came in
    ``timer``'s time. The user's one timer serves every wait: gevent's own socket timeout builds a
    ``Timeout`` and a libev timer for each, about a tenth of a generator's CPU per request (py-spy)."""
    timer.start(getcurrent().throw, TimeoutError, "timed out", update=True)
    try:
        return sock.recv(size)
    finally:
        timer.stop()


def _read_answer(sock, block_size: int, timer) -> tuple[int, bytes, bool]:
    """``(status, body, keep-alive)`` of the answer arriving on ``sock``; raises ``HTTPConnectionClosed``
    when the connection was closed before a byte came (a kept-alive socket the target had closed)."""
    answer = _Answer()
    try:
        data = _recv(sock, block_size, timer)
    except gevent.socket.error as error:
        if error.errno == errno.ECONNRESET:
            raise HTTPConnectionClosed("connection closed.") from error
        raise
    if not data:
        raise HTTPConnectionClosed("connection closed.")
    answer.feed(data)
    while not answer.complete:
        data = _recv(sock, block_size, timer)
        answer.feed(data)  # b"" is the close: the end of a body read to it, else the parser's error
        if not data and not answer.complete:
            raise HTTPParseError("connection closed before the end of the answer")
    return answer.get_code(), bytes(answer.body), answer.should_keep_alive()


_decode_json = msgspec.json.Decoder().decode  # one decoder for every answer: it keeps no state between them


class JourneyResponse:
    """What came back: status (0 when nothing did), body bytes, and the error when the exchange failed."""

    __slots__ = ("status_code", "content", "error", "response_time_ms", "start_time", "method", "url")

    def __init__(self, method: str, url: str, start_time: float) -> None:
        self.method = method
        self.url = url
        self.start_time = start_time
        self.status_code = 0
        self.content = b""
        self.error: BaseException | None = None
        self.response_time_ms = 0.0

    def json(self) -> Any:
        # msgspec: half json's CPU on a page of 20 escrows (9.9 vs 19.9 us), ~4 % of a journey request's;
        # UTF-8 only (RFC 8259 8.1) and standard JSON only (no NaN); its errors are ValueErrors, as json's
        return _decode_json(self.content)


class JourneyHttpClient:
    """One user's connection to the target at ``base_url`` (path prefix included, e.g. ``/v1``)."""

    def __init__(self, base_url: str, *, request_event, connection_timeout: float, network_timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"host: {base_url!r} is not an http(s) URL; pass --host http://HOST[:PORT][/PREFIX]")
        self.prefix = parts.path.rstrip("/")
        self.request_event = request_event
        # thousands of keep-alive sockets per process: without the fix every socket
        # numbered 1,024 or more is reopened for each request (stampede.load.fixes)
        patch_connection_pool()
        self._http = HTTPClient(
            parts.hostname, parts.port, ssl=parts.scheme == "https", concurrency=1,
            connection_timeout=connection_timeout, network_timeout=network_timeout,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json"},
        )
        host = self._http.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        if self._http.port not in (80, 443):
            host = f"{host}:{self._http.port}"
        self._fixed_fields = f"User-Agent: {USER_AGENT}\r\nAccept: application/json\r\n"
        self._host_field = f"Host: {host}\r\n"
        self._queries: dict[tuple, str] = {}  # the journeys send a handful of distinct parameter sets
        self._pool = self._http._connection_pool  # opens a connection as HTTPClient does (timeouts, TLS)
        self._sock = None  # the user's kept-alive connection, between two requests
        self._sock_watch = None  # its idle_watch
        self._network_timeout = network_timeout
        self._timer = None  # the network timeout of every wait on the user's connection (_recv), made on first use

    def send(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
             headers: dict[str, str] | None = None) -> JourneyResponse:
        """Send one request and read the whole answer; never raises for network trouble."""
        url = self.prefix + path
        if params:
            url = f"{url}?{self._query(params)}"
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers = {**headers, "Content-Type": "application/json"} if headers else {"Content-Type": "application/json"}
        response = JourneyResponse(method, url, time.time())
        started = time.perf_counter()
        try:
            response.status_code, response.content = self._exchange(method, url, body, headers)
        except Exception as error:  # noqa: BLE001 - any failure to exchange is the response's error, as in Locust
            response.error = error
        response.response_time_ms = (time.perf_counter() - started) * 1000
        return response

    def _query(self, params: dict[str, Any]) -> str:
        try:
            key = tuple(params.items())
            query = self._queries.get(key)
        except TypeError:  # an unhashable value: encoded every time
            return urlencode(params)
        if query is None:
            query = urlencode(params)
            if len(self._queries) < _QUERY_CACHE_MAX:
                self._queries[key] = query
        return query

    def _head(self, method: str, url: str, body: bytes | None, headers: dict[str, str] | None) -> bytes | None:
        """The request head, or ``None`` when the caller's headers need ``HTTPClient``'s merge."""
        if _UNSAFE_URL.search(url) or not url.startswith("/"):
            raise ValueError(f"invalid request URI {url!r}")
        lines = [method, " ", url, " HTTP/1.1\r\n", self._fixed_fields]
        if headers:
            for name, value in headers.items():
                if name.lower() in _OWN_FIELDS:
                    return None
                value = str(value)
                if name not in _checked_names:
                    if not isinstance(name, str) or not _FIELD_NAME.fullmatch(name):
                        raise ValueError(f"invalid header field name {name!r}")
                    _checked_names.add(name)
                if _UNSAFE_VALUE.search(value):
                    raise ValueError(f"invalid value for header field {name!r}")
                lines += (name, ": ", value, "\r\n")
        lines.append(self._host_field)
        if body:
            lines += ("Content-Length: ", str(len(body)), "\r\n")
        elif method in _WITH_BODY:
            lines.append("Content-Length: 0\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    def _exchange(self, method: str, url: str, body: bytes | None, headers: dict[str, str] | None
                  ) -> tuple[int, bytes]:
        """Send the request on the user's connection and read the whole answer: ``(status, body)``."""
        head = self._head(method, url, body, headers)
        if head is None or method == "HEAD":  # HTTPClient's merge, and its body-less read of a HEAD answer
            return self._through_http_client(method, url, body, headers)
        data = head + body if body else head
        retries_left = _RETRIES
        while True:
            sock, self._sock = self._sock, None
            if sock is None or self._sock_watch.poll(0):
                if sock is not None:
                    sock.close()
                sock = self._pool._create_socket()
                sock.settimeout(None)  # its waits are bounded by the user's timer instead (_recv, _send)
                self._sock_watch = idle_watch(sock)
            if self._timer is None:
                self._timer = get_hub().loop.timer(self._network_timeout)
            try:
                self._send(sock, data)
            except gevent.socket.error as error:
                sock.close()
                if error.errno in (errno.ECONNRESET, errno.EPIPE) and retries_left > 0 and method in _IDEMPOTENT:
                    retries_left -= 1
                    continue
                raise
            try:
                status, content, keep_alive = _read_answer(sock, self._http.block_size, self._timer)
            except HTTPConnectionClosed:
                sock.close()
                if retries_left > 0 and method in _IDEMPOTENT:
                    retries_left -= 1
                    continue
                raise
            except BaseException:
                sock.close()
                raise
            if keep_alive:
                self._sock = sock
            else:
                sock.close()
            return status, content

    def _send(self, sock, data: bytes) -> None:
        """All of ``data`` (a request head fits the socket's buffer: one ``send``), each wait timed as ``_recv``'s."""
        timer, sent = self._timer, 0
        while sent < len(data):
            timer.start(getcurrent().throw, TimeoutError, "timed out", update=True)
            try:
                sent += sock.send(data[sent:] if sent else data)
            finally:
                timer.stop()

    def _through_http_client(self, method: str, url: str, body: bytes | None, headers: dict[str, str] | None
                             ) -> tuple[int, bytes]:
        """``HTTPClient.request`` on the user's connection: lent to its pool, taken back after."""
        queue = self._pool._socket_queue
        if self._sock is not None:
            self._sock.settimeout(self._network_timeout)  # HTTPClient's waits are timed by the socket
            queue.put(self._sock)  # idle in the pool, as HTTPClient leaves a kept-alive socket
            self._sock = None
        try:
            answer = self._http.request(method, url, body=body, headers=headers)
            try:
                return answer.status_code, answer.read()
            finally:
                answer.release()
        finally:
            if not queue.empty():
                self._sock = queue.get(block=False)
                self._sock.settimeout(None)
                self._sock_watch = idle_watch(self._sock)

    def report(self, response: JourneyResponse, name: str, exception: BaseException | None,
               context: dict[str, Any] | None = None) -> None:
        """Fire Locust's ``request`` event for ``response`` (``exception`` marks it failed)."""
        self.request_event.fire(
            request_type=response.method, name=name, response_time=response.response_time_ms,
            response_length=len(response.content), exception=exception, context=context or {},
            response=response, start_time=response.start_time, url=response.url,
        )

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._http.close()
