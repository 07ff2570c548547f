"""Target environments: which hosts may receive load, and how much.

Loopback is the built-in ``local`` environment. Any other host must be listed
by an environment that allows load; a host that belongs to a production
environment (``allow_load: false``) is never a valid target.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from stampede.netutil import is_loopback_host

ENVIRONMENTS_FILE = Path(__file__).resolve().parents[2] / "loadtests" / "environments.yaml"


class TargetRefused(ValueError):
    """The target may not receive load (one line: why, and what to do instead)."""


@dataclass(frozen=True)
class Environment:
    name: str
    base_urls: tuple[str, ...] = ()
    allow_load: bool = False
    max_users: int = 0
    hosts: frozenset[str] = field(default_factory=frozenset)


def load_environments(text: str | None = None) -> dict[str, Environment]:
    """From ``text`` (YAML or JSON), else $STAMPEDE_ENVIRONMENTS_FILE, else the shipped file."""
    if text is None:
        path = Path(os.environ.get("STAMPEDE_ENVIRONMENTS_FILE") or ENVIRONMENTS_FILE)
        text = path.read_text()
    raw = yaml.safe_load(text) if text.strip() and not text.lstrip().startswith("{") else json.loads(text or "{}")
    environments = {}
    for name, spec in (raw or {}).get("environments", {}).items():
        urls = tuple(spec.get("base_urls") or ())
        environments[name] = Environment(
            name=name, base_urls=urls, allow_load=bool(spec.get("allow_load", False)),
            max_users=int(spec.get("max_users", 0) or 0),
            hosts=frozenset((urlsplit(u).hostname or "").lower() for u in urls),
        )
    return environments


def resolve_target(target: str, environments: dict[str, Environment]) -> Environment:
    """The environment ``target`` belongs to; refuses production, unknown hosts and bad URLs."""
    parts = urlsplit(target)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TargetRefused(f"target: {target!r} is not an http(s) URL; fix: use e.g. http://127.0.0.1:8000/v1")
    host = parts.hostname.lower()
    for env in environments.values():
        if host in env.hosts and not env.allow_load:
            raise TargetRefused(f"target: {host} belongs to {env.name}, where load is never allowed; fix: target staging")
    if is_loopback_host(host):
        return environments.get("local") or Environment(name="local", allow_load=True, max_users=20000)
    for env in environments.values():
        if host in env.hosts and env.allow_load:
            return env
    raise TargetRefused(
        f"target: host {host} is not listed by any environment that allows load; "
        "fix: add it to loadtests/environments.yaml (or $STAMPEDE_ENVIRONMENTS_FILE) under staging"
    )
