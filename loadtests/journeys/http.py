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
URL, CR/LF in a header value) is still refused before anything is sent; the answer
is read by geventhttpclient's own parser, and a reused connection that the target
had closed is retried as ``HTTPClient`` retries it (idempotent methods only).

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
from geventhttpclient import HTTPClient
from geventhttpclient.response import HTTPConnectionClosed, HTTPSocketPoolResponse

from stampede.load.fixes import patch_connection_pool

__all__ = ["JourneyHttpClient", "JourneyResponse"]

USER_AGENT = "stampede-journeys"  # so the target's logs tell load-test traffic apart
_UNSAFE_URL = re.compile(r"[\x00-\x20\x7f]")  # would end or split the request line
_UNSAFE_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # would end or split a header line
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 9.2.2: may be retried
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})  # Content-Length: 0 when sent without one (RFC 9112 6.3)
_OWN_FIELDS = frozenset({"host", "user-agent", "accept", "content-length", "transfer-encoding", "expect"})
_FIELD_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.1: a token
_QUERY_CACHE_MAX = 4096
_checked_names: set[str] = set()  # header names already found to be tokens


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
        # JSON on the wire is UTF-8 (RFC 8259 8.1): decoded as such, without json.loads' encoding sniffing
        return jsonlib.loads(self.content.decode("utf-8"))


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
            answer = self._exchange(method, url, body, headers)
            try:
                response.content = answer.read()
                response.status_code = answer.status_code
            finally:
                answer.release()
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

    def _exchange(self, method: str, url: str, body: bytes | None, headers: dict[str, str] | None):
        """Send the request on the pooled connection and parse the answer's head (geventhttpclient's parser)."""
        head = self._head(method, url, body, headers)
        if head is None:
            return self._http.request(method, url, body=body, headers=headers)
        data = head + body if body else head
        pool = self._http._connection_pool
        attempts_left = pool.size + 1  # as HTTPClient: a kept-alive socket the target closed is tried again
        while True:
            sock = pool.get_socket()
            try:
                sock.sendall(data)
            except gevent.socket.error as error:
                pool.release_socket(sock)
                if error.errno in (errno.ECONNRESET, errno.EPIPE) and attempts_left > 0 and method in _IDEMPOTENT:
                    attempts_left -= 1
                    continue
                raise
            try:
                return HTTPSocketPoolResponse(sock, pool, block_size=self._http.block_size, method=method,
                                              headers_type=self._http.headers_type)
            except HTTPConnectionClosed:  # the response released the socket itself
                if attempts_left > 0 and method in _IDEMPOTENT:
                    attempts_left -= 1
                    continue
                raise

    def report(self, response: JourneyResponse, name: str, exception: BaseException | None,
               context: dict[str, Any] | None = None) -> None:
        """Fire Locust's ``request`` event for ``response`` (``exception`` marks it failed)."""
        self.request_event.fire(
            request_type=response.method, name=name, response_time=response.response_time_ms,
            response_length=len(response.content), exception=exception, context=context or {},
            response=response, start_time=response.start_time, url=response.url,
        )

    def close(self) -> None:
        self._http.close()
