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

The caller judges the response and reports it with ``report``; a request that
is never reported is not counted, so every path through a journey step reports.
"""

from __future__ import annotations

import json as jsonlib
import time
from typing import Any
from urllib.parse import urlencode, urlsplit

from geventhttpclient import HTTPClient

from stampede.load.fixes import patch_connection_pool

__all__ = ["JourneyHttpClient", "JourneyResponse"]

USER_AGENT = "stampede-journeys"  # so the target's logs tell load-test traffic apart


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
        return jsonlib.loads(self.content)


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

    def send(self, method: str, path: str, *, params: dict[str, Any] | None = None, json: Any = None,
             headers: dict[str, str] | None = None) -> JourneyResponse:
        """Send one request and read the whole answer; never raises for network trouble."""
        url = self.prefix + path
        if params:
            url = f"{url}?{urlencode(params)}"
        body = None
        if json is not None:
            body = jsonlib.dumps(json).encode()
            headers = {**headers, "Content-Type": "application/json"} if headers else {"Content-Type": "application/json"}
        response = JourneyResponse(method, url, time.time())
        started = time.perf_counter()
        try:
            answer = self._http.request(method, url, body=body, headers=headers)
            try:
                response.content = answer.read()
                response.status_code = answer.status_code
            finally:
                answer.release()
        except Exception as error:  # noqa: BLE001 - any failure to exchange is the response's error, as in Locust
            response.error = error
        response.response_time_ms = (time.perf_counter() - started) * 1000
        return response

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
