"""The target's health endpoint, probed without following redirects or proxies.

Used before the first stage (preflight) and whenever a new stage starts: a
target that went down under load stops the run with a clear reason.
"""

from __future__ import annotations

import time

import httpx

__all__ = ["probe"]


def probe(target: str, *, timeout_s: float = 2.0, attempts: int = 2, pause_s: float = 0.5) -> str | None:
    """``None`` when ``GET {target}/health`` answers 200, else why not (after ``attempts`` tries).

    A redirect is an unhealthy answer, never followed: load must not wander to another host.
    ``trust_env=False``: no proxy from the environment ever carries the probe off this path.
    """
    last = "no attempt"
    with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
        for attempt in range(attempts):
            try:
                response = client.get(f"{target.rstrip('/')}/health")
                if response.status_code == 200:
                    return None
                last = f"HTTP {response.status_code}" + (
                    f" redirect to {response.headers.get('location', '?')}, not followed" if response.is_redirect else ""
                )
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if attempt + 1 < attempts:
                time.sleep(pause_s)
    return f"{target.rstrip('/')}/health is not healthy ({last})"
