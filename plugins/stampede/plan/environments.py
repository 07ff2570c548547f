"""Target environments: which hosts may receive load, and how much.

Loopback is the built-in ``local`` environment. Any other host must be listed
by an environment that allows load; a host that belongs to a production
environment (``allow_load: false``) is never a valid target, and neither is a
host that *resolves* to one of a production host's addresses (checked with
``socket.getaddrinfo`` only: no traffic). An environment may limit load to
``allowed_hours`` (UTC: ``"22:00-06:00"`` or a list of such windows).

Where the config comes from, first found wins: the text passed in (the Airflow
tasks pass the Variable ``stampede_environments``, read at run time only by
``stampede.surfaces.airflow_config``), $STAMPEDE_ENVIRONMENTS_FILE, the shipped
``loadtests/environments.yaml``.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit

import yaml

from stampede.core.errors import Refusal
from stampede.core.netutil import is_loopback_host
from stampede.core.paths import data_dir

ENVIRONMENTS_FILE = data_dir("loadtests") / "environments.yaml"
VARIABLE = "stampede_environments"
_WINDOW = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]|24):([0-5]\d)\s*$")


class TargetRefused(Refusal):
    """The target may not receive load (one line: why, and what to do instead)."""


@dataclass(frozen=True)
class Environment:
    name: str
    base_urls: tuple[str, ...] = ()
    allow_load: bool = False
    max_users: int = 0
    hosts: frozenset[str] = field(default_factory=frozenset)
    metrics: dict = field(default_factory=dict, hash=False, compare=False)  # server metrics source (server_metrics.py)
    allowed_hours: tuple[tuple[int, int], ...] = ()  # UTC windows as (start, end) minutes of the day; () = always

    def is_allowed_at(self, now: datetime) -> bool:
        if not self.allowed_hours:
            return True
        utc = now.astimezone(timezone.utc)
        return any(_in_window(utc.hour * 60 + utc.minute, start, end) for start, end in self.allowed_hours)

    def next_allowed(self, now: datetime) -> datetime:
        """The start of the next allowed window after ``now`` (UTC, to the minute)."""
        now = now.astimezone(timezone.utc).replace(second=0, microsecond=0)
        for step in range(1, 2 * 24 * 60 + 1):
            candidate = now + timedelta(minutes=step)
            if self.is_allowed_at(candidate):
                return candidate
        return now

    def hours_text(self) -> str:
        return ", ".join(f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in self.allowed_hours)


class EnvironmentsError(Refusal):
    """The environments config is invalid (one line: which field, and the fix)."""


def _in_window(minute: int, start: int, end: int) -> bool:
    if start == end:
        return True
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps midnight, e.g. 22:00-06:00


def _parse_hours(name: str, raw) -> tuple[tuple[int, int], ...]:
    if raw in (None, "", []):
        return ()
    windows = [raw] if isinstance(raw, str) else raw
    if not isinstance(windows, list):
        raise EnvironmentsError(
            f"environments.{name}.allowed_hours: must be \"HH:MM-HH:MM\" or a list of them; fix: e.g. \"22:00-06:00\""
        )
    parsed = []
    for window in windows:
        match = _WINDOW.match(window) if isinstance(window, str) else None
        if not match:
            raise EnvironmentsError(
                f"environments.{name}.allowed_hours: {window!r} is not HH:MM-HH:MM (UTC); fix: e.g. \"22:00-06:00\""
            )
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        parsed.append((h1 * 60 + m1, (h2 * 60 + m2) % (24 * 60)))
    return tuple(parsed)


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
            metrics=dict(spec.get("metrics") or {}),
            allowed_hours=_parse_hours(name, spec.get("allowed_hours")),
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
    _refuse_production_addresses(host, environments)
    if is_loopback_host(host):
        return environments.get("local") or Environment(name="local", allow_load=True, max_users=20000)
    for env in environments.values():
        if host in env.hosts and env.allow_load:
            return env
    raise TargetRefused(
        f"target: host {host} is not listed by any environment that allows load; "
        "fix: add it to loadtests/environments.yaml (or $STAMPEDE_ENVIRONMENTS_FILE) under staging"
    )


def check_allowed_hours(env: Environment, now: datetime | None = None) -> None:
    """Refuse when ``now`` (UTC) is outside the environment's allowed hours."""
    now = now or datetime.now(timezone.utc)
    if env.is_allowed_at(now):
        return
    upcoming = env.next_allowed(now)
    raise TargetRefused(
        f"time: {now.astimezone(timezone.utc):%H:%M} UTC is outside {env.name}'s allowed hours ({env.hours_text()} UTC); "
        f"fix: run at or after {upcoming:%Y-%m-%d %H:%M} UTC"
    )


def addresses_of(host: str) -> set[str]:
    """Every address ``host`` resolves to (``socket.getaddrinfo``: a lookup, no traffic to the host)."""
    try:
        return {str(ipaddress.ip_address(host.strip("[]")))}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return set()
    return {str(ipaddress.ip_address(info[4][0].split("%")[0])) for info in infos}


def _refuse_production_addresses(host: str, environments: dict[str, Environment]) -> None:
    """A target whose addresses overlap a production host's (an alias, a raw IP, a CNAME) is production."""
    protected = [(env, h) for env in environments.values() if not env.allow_load for h in env.hosts if h]
    if not protected:
        return
    mine = addresses_of(host)
    for env, other in protected:
        shared = sorted(mine & addresses_of(other))
        if shared:
            raise TargetRefused(
                f"target: {host} resolves to {shared[0]}, an address of {other} in {env.name}, "
                "where load is never allowed; fix: target staging"
            )
