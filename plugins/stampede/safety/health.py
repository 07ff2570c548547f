"""The target's health endpoint, probed at the addresses preflight resolved, never following a redirect.

Used before the first stage (preflight) and whenever a new stage starts: a
target that went down under load stops the run with a clear reason.

The probe connects to the target's resolved addresses itself (``http.client``
over a socket it opened to that address, TLS verified against the host name),
so a name cannot resolve somewhere else between preflight and the probe; no
proxy from the environment carries it off this path, and a redirect is an
unhealthy answer, never followed: load must not wander to another host.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Sequence

from stampede.plan.target import Target, parse_target, resolve

__all__ = ["probe"]


def probe(target: Target | str, *, timeout_s: float = 2.0, attempts: int = 2, pause_s: float = 0.5,
          addresses: Sequence[str] = ()) -> str | None:
    """``None`` when ``GET {target}/health`` answers 200, else why not (after ``attempts`` tries).

    :param addresses: where the target's host resolved at preflight (``RunPlan.target_addresses``);
        default the target's own, else one lookup now.
    """
    if isinstance(target, str):
        target = parse_target(target)
    if addresses:
        target = Target(target.scheme, target.host, target.port, target.path, tuple(addresses))
    url = f"{target.url}/health"
    last = "no attempt"
    for attempt in range(attempts):
        try:
            if not target.addresses:
                target = resolve(target)
            status, location = _get(target, f"{target.path}/health", timeout_s)
            if status == 200:
                return None
            last = f"HTTP {status}" + (f" redirect to {location or '?'}, not followed" if 300 <= status < 400 else "")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            last = type(exc).__name__
        if attempt + 1 < attempts:
            time.sleep(pause_s)
    return f"{url} is not healthy ({last})"


def _get(target: Target, path: str, timeout_s: float) -> tuple[int, str | None]:
    """One GET at the first resolved address that accepts the connection."""
    error: OSError | None = None
    for address in target.addresses:
        connection = _PinnedConnection(target, address, timeout_s)
        try:
            connection.request("GET", path, headers={"Host": _host_header(target), "Accept": "application/json"})
            response = connection.getresponse()
            response.read(64 * 1024)
            return response.status, response.getheader("Location")
        except OSError as exc:
            error = exc
        finally:
            connection.close()
    raise error or OSError("no address")


def _host_header(target: Target) -> str:
    default = {"http": 80, "https": 443}[target.scheme]
    return target.netloc if target.port != default else target.netloc.rsplit(":", 1)[0]


class _PinnedConnection(http.client.HTTPConnection):
    """An HTTP(S) connection to ``address``, speaking to ``target.host`` (Host header, TLS server name)."""

    def __init__(self, target: Target, address: str, timeout_s: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout_s)
        self.address, self.tls = address, target.scheme == "https"

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)
        if self.tls:
            self.sock = ssl.create_default_context().wrap_socket(self.sock, server_hostname=self.host)
