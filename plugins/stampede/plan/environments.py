"""Target environments: which hosts may receive load, and how much, as a validated schema.

The reviewed file (``$STAMPEDE_ENVIRONMENTS_FILE``, else the shipped
``loadtests/environments.yaml``) says where load may go::

    environments:
      local:      {allow_load: true, max_users: 20000}
      staging:    {base_urls: ["https://staging-api.example.com/v1"], allow_load: true,
                   max_users: 20000, allowed_hours: "22:00-06:00"}
      production: {base_urls: ["https://api.example.com/v1"], allow_load: false}

It is parsed strictly (pydantic, strict mode): ``allow_load`` is ``true`` or
``false`` (a quoted ``"false"`` is an error, not ``True``: ``bool("false")`` once
let a smoke run send 85 requests to a canary listed as production), numbers are
whole numbers, unknown keys and duplicate keys are errors, base URLs are
canonical targets (:mod:`stampede.plan.target`), and every problem is one line
naming the field and the fix.

**Overrides only narrow.** The Airflow Variable ``stampede_environments`` (read
at run time by ``stampede.surfaces.airflow_config``) is applied *on top of* the
reviewed file, never instead of it. It may

- add environments whose hosts the reviewed file does not list (a new staging);
- lower an environment's ``max_users``, narrow its ``allowed_hours``, turn its
  ``allow_load`` off, or add hosts to an environment where load is not allowed;

and nothing else: a host that the reviewed file puts under ``allow_load: false``
can never become loadable through the Variable (one-line refusal naming the key).

**Which environment a target belongs to** (:func:`resolve_target`): a target is
production when its host is listed by an environment that does not allow load,
or when any address it resolves to is an address of such a host (an alias, a raw
IP, a CNAME: ``getaddrinfo`` only, nothing is sent). A literal loopback address
or ``localhost`` is the built-in ``local`` environment; any other host must be
listed by exactly one environment that allows load.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stampede.core.errors import Refusal
from stampede.core.paths import data_dir
from stampede.plan.target import LOCALHOST, Resolver, Target, TargetInvalid, parse_target, resolve

ENVIRONMENTS_FILE = data_dir("loadtests") / "environments.yaml"
ENV_FILE = "STAMPEDE_ENVIRONMENTS_FILE"
VARIABLE = "stampede_environments"
LOCAL = "local"
LOCAL_MAX_USERS = 20000  # the built-in local environment's cap when the file does not set one
MAX_USERS = 200_000
_WINDOW = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]|24):([0-5]\d)\s*$")
_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
MINUTES_PER_DAY = 24 * 60
FIELDS = ("base_urls", "allow_load", "max_users", "allowed_hours", "metrics")


class TargetRefused(Refusal):
    """The target may not receive load (one line: why, and what to do instead)."""


class EnvironmentsError(Refusal):
    """The environments config is invalid (one line: which field, and the fix)."""


# -- the schema ----------------------------------------------------------------------------------
class EnvironmentSpec(BaseModel):
    """One environment as written in the file (strict: no coercion of "false", "5" or 5.0)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    base_urls: list[str] = []
    allow_load: bool = False
    max_users: int = Field(0, ge=0, le=MAX_USERS)  # 0: no cap of its own
    allowed_hours: tuple[tuple[int, int], ...] = ()
    metrics: dict[str, Any] = {}

    @field_validator("allowed_hours", mode="before")
    @classmethod
    def _hours(cls, raw: Any) -> tuple[tuple[int, int], ...]:
        return parse_hours(raw)


class EnvironmentsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    environments: dict[str, EnvironmentSpec]


@dataclass(frozen=True)
class Environment:
    name: str
    base_urls: tuple[str, ...] = ()  # canonical target URLs
    allow_load: bool = False
    max_users: int = 0
    hosts: frozenset[str] = field(default_factory=frozenset)  # canonical hosts of base_urls
    metrics: dict = field(default_factory=dict, hash=False, compare=False)  # server metrics source (figures/server.py)
    allowed_hours: tuple[tuple[int, int], ...] = ()  # UTC windows as (start, end) minutes of the day; () = always
    source: str = "file"  # file (reviewed) | override (the Variable) | builtin

    def is_allowed_at(self, now: datetime) -> bool:
        if not self.allowed_hours:
            return True
        utc = now.astimezone(timezone.utc)
        return _minute_allowed(utc.hour * 60 + utc.minute, self.allowed_hours)

    def next_allowed(self, now: datetime) -> datetime:
        """The start of the next allowed window after ``now`` (UTC, to the minute)."""
        now = now.astimezone(timezone.utc).replace(second=0, microsecond=0)
        for step in range(1, 2 * MINUTES_PER_DAY + 1):
            candidate = now + timedelta(minutes=step)
            if self.is_allowed_at(candidate):
                return candidate
        return now

    def hours_text(self) -> str:
        return ", ".join(f"{s // 60:02d}:{s % 60:02d}-{e // 60:02d}:{e % 60:02d}" for s, e in self.allowed_hours)


def _in_window(minute: int, start: int, end: int) -> bool:
    if start == end:
        return True
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end  # wraps midnight, e.g. 22:00-06:00


def _minute_allowed(minute: int, windows: tuple[tuple[int, int], ...]) -> bool:
    return not windows or any(_in_window(minute, s, e) for s, e in windows)


def _allowed_minutes(windows: tuple[tuple[int, int], ...]) -> frozenset[int]:
    return frozenset(m for m in range(MINUTES_PER_DAY) if _minute_allowed(m, windows))


def parse_hours(raw: Any) -> tuple[tuple[int, int], ...]:
    """``"HH:MM-HH:MM"`` or a list of them (UTC) as (start, end) minutes; raises ``ValueError`` with the fix."""
    if raw is None or raw == "" or raw == [] or raw == ():
        return ()
    if isinstance(raw, tuple) and all(isinstance(w, tuple) for w in raw):
        return raw  # already parsed (a spec rebuilt from its own fields)
    windows = [raw] if isinstance(raw, str) else raw
    if not isinstance(windows, list):
        raise ValueError('must be "HH:MM-HH:MM" or a list of them; fix: e.g. "22:00-06:00"')
    parsed = []
    for window in windows:
        match = _WINDOW.match(window) if isinstance(window, str) else None
        if not match:
            raise ValueError(f'{window!r} is not HH:MM-HH:MM (UTC); fix: e.g. "22:00-06:00"')
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        parsed.append((h1 * 60 + m1, (h2 * 60 + m2) % MINUTES_PER_DAY))
    return tuple(parsed)


# -- reading and merging -------------------------------------------------------------------------
class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys (``allow_load: false`` then ``allow_load: true``): refuse it."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise EnvironmentsError(f"{_where(loader)}: key {key!r} is given twice (line {key_node.start_mark.line + 1}); "
                                    "fix: keep one")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _where(loader: _UniqueKeyLoader) -> str:
    return getattr(loader, "stampede_label", "environments")


def parse_environments(text: str, *, label: str, source: str) -> dict[str, Environment]:
    """One environments document (YAML or JSON) as validated environments; :class:`EnvironmentsError` otherwise.

    :param label: how problems name the document (``environments`` for the file,
        ``stampede_environments`` for the Variable).
    """
    return {name: env for name, (env, _given) in _parse(text, label=label, source=source).items()}


def _parse(text: str, *, label: str, source: str) -> dict[str, tuple[Environment, frozenset[str]]]:
    """Each environment with the keys the document gave it (an override narrows only what it gives)."""
    loader = _UniqueKeyLoader(text or "")
    loader.stampede_label = label
    try:
        raw = loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise EnvironmentsError(f"{label}:{where} is not valid YAML or JSON; fix: check indentation and quoting") from None
    finally:
        loader.dispose()
    try:
        spec = EnvironmentsSpec.model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise EnvironmentsError.line(_problem_line(exc, label)) from None
    environments = {}
    for name, env in spec.environments.items():
        if not _NAME.match(name):
            raise EnvironmentsError(f"{label}.{name}", "is not a valid environment name",
                                    "use lower-case letters, digits, - and _")
        environments[name] = (_environment(name, env, label=label, source=source), frozenset(env.model_fields_set))
    return environments


def _environment(name: str, spec: EnvironmentSpec, *, label: str, source: str) -> Environment:
    targets = []
    for index, url in enumerate(spec.base_urls):
        try:
            targets.append(parse_target(url, field=f"{label}.{name}.base_urls[{index}]"))
        except TargetInvalid as exc:
            raise EnvironmentsError.line(str(exc)) from None
    return Environment(
        name=name, base_urls=tuple(t.url for t in targets), allow_load=spec.allow_load, max_users=spec.max_users,
        hosts=frozenset(t.host for t in targets), metrics=dict(spec.metrics), allowed_hours=spec.allowed_hours,
        source=source,
    )


_MESSAGES = {
    "bool_type": ("must be true or false, unquoted (got {input!r})", "write true or false without quotes"),
    "int_type": ("must be a whole number (got {input!r})", "write a number without quotes, e.g. 5000"),
    "list_type": ("must be a list (got {input!r})", 'write e.g. ["https://staging-api.example.com/v1"]'),
    "string_type": ("must be text (got {input!r})", "quote it"),
    "dict_type": ("must be a mapping (got {input!r})", "write key: value pairs"),
    "model_type": ("must be a mapping (got {input!r})", "start the document with 'environments:'"),
    "extra_forbidden": ("unknown key", f"remove it or use one of {', '.join(FIELDS)}"),
    "missing": ("missing", "add it"),
    "greater_than_equal": ("must be {ge} or more (got {input!r})", "raise it"),
    "less_than_equal": ("must be {le} or less (got {input!r})", "lower it"),
}


def _problem_line(exc: ValidationError, label: str) -> str:
    errors = exc.errors(include_url=False)
    lines = []
    for error in errors:
        where = ".".join([label, *(str(p) for p in error["loc"] if p != "environments")])
        if error["type"] == "value_error":
            problem = str(error.get("ctx", {}).get("error", error["msg"]))
            lines.append(f"{where}: {problem}" if "fix:" in problem else f"{where}: {problem}; fix: correct it")
            continue
        if where == label and error["type"] == "missing":
            lines.append(f"{label}.environments: missing; fix: start the document with 'environments:'")
            continue
        problem, fix = _MESSAGES.get(error["type"], (error["msg"], "correct it"))
        context = {"input": error.get("input"), **(error.get("ctx") or {})}
        lines.append(f"{where}: {problem.format(**context)}; fix: {fix}")
    more = f" (and {len(lines) - 1} more problem{'s' if len(lines) > 2 else ''})" if len(lines) > 1 else ""
    return lines[0] + more


def _builtin_local() -> Environment:
    return Environment(name=LOCAL, allow_load=True, max_users=LOCAL_MAX_USERS, source="builtin")


def reviewed_environments() -> dict[str, Environment]:
    """The reviewed file alone: ``$STAMPEDE_ENVIRONMENTS_FILE``, else the shipped one."""
    path = Path(os.environ.get(ENV_FILE) or ENVIRONMENTS_FILE)
    try:
        text = path.read_text()
    except OSError as exc:
        raise EnvironmentsError(f"environments: cannot read {path} ({exc.strerror}); fix: point {ENV_FILE} at a readable file") from None
    environments = parse_environments(text, label="environments", source="file")
    environments.setdefault(LOCAL, _builtin_local())
    return environments


def load_environments(override: str | None = None) -> dict[str, Environment]:
    """The reviewed file, narrowed by ``override`` (the Variable's YAML or JSON), when given."""
    base = reviewed_environments()
    if override is None or not override.strip():
        return base
    return apply_override(base, _parse(override, label=VARIABLE, source="override"))


def apply_override(base: dict[str, Environment],
                   override: dict[str, tuple[Environment, frozenset[str]]]) -> dict[str, Environment]:
    """``base`` with ``override`` applied; refuses anything that would widen what may receive load."""
    merged = dict(base)
    base_hosts = {h: env for env in base.values() for h in env.hosts}
    for name, (env, given) in override.items():
        where = f"{VARIABLE}.{name}"
        current = base.get(name)
        if current is not None:
            merged[name] = _narrowed(current, env, given, where)
            continue
        for host in sorted(env.hosts):
            if host in base_hosts:
                owner = base_hosts[host].name
                raise EnvironmentsError(f"{where}.base_urls", f"{host} is already listed by the reviewed environment "
                                        f"{owner}", f"narrow {owner} in the Variable instead")
            if env.allow_load and _is_local_host(host):
                raise EnvironmentsError(f"{where}.base_urls", f"{host} is this machine, the built-in {LOCAL} "
                                        "environment", f"narrow {LOCAL} in the Variable instead")
        merged[name] = env
    return merged


def _is_local_host(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == LOCALHOST


def _narrowed(current: Environment, env: Environment, given: set[str], where: str) -> Environment:
    """``current`` with the fields ``given`` by the override, each of which may only narrow it."""
    changes: dict[str, Any] = {}
    if "allow_load" in given and env.allow_load != current.allow_load:
        if env.allow_load:
            raise EnvironmentsError(f"{where}.allow_load", "an override may not allow load where the reviewed "
                                    "environments file forbids it", "edit the reviewed file (a change that is reviewed)")
        changes["allow_load"] = False
    if "base_urls" in given and set(env.base_urls) != set(current.base_urls):
        if changes.get("allow_load", current.allow_load):
            raise EnvironmentsError(f"{where}.base_urls", "an override may not change the hosts of a reviewed "
                                    "environment that allows load", "add a new environment, or edit the reviewed file")
        # where load is not allowed, the override may only add hosts to protect
        urls = tuple(dict.fromkeys((*current.base_urls, *env.base_urls)))
        changes.update(base_urls=urls, hosts=current.hosts | env.hosts)
    if "max_users" in given and env.max_users != current.max_users:
        if env.max_users == 0 or (current.max_users and env.max_users > current.max_users):
            limit = current.max_users or "no cap"
            raise EnvironmentsError(f"{where}.max_users", f"{env.max_users or 'no cap'} is above the reviewed cap "
                                    f"({limit})", "an override may only lower the cap")
        changes["max_users"] = env.max_users
    if "allowed_hours" in given and env.allowed_hours != current.allowed_hours:
        if not _allowed_minutes(env.allowed_hours) <= _allowed_minutes(current.allowed_hours):
            raise EnvironmentsError(f"{where}.allowed_hours", "allows minutes the reviewed environment does not "
                                    f"({current.hours_text() or 'always'} UTC)", "an override may only narrow the hours")
        changes["allowed_hours"] = env.allowed_hours
    if "metrics" in given and env.metrics != current.metrics:
        raise EnvironmentsError(f"{where}.metrics", "an override may not change a reviewed environment's metrics",
                                "edit the reviewed file")
    if not changes:
        return current
    return Environment(**{**current.__dict__, **changes})


# -- which environment a target belongs to ---------------------------------------------------------
def resolve_target(target: Target | str, environments: dict[str, Environment]) -> Environment:
    """The environment ``target`` belongs to; refuses production, unknown hosts and bad URLs (see :func:`classify`)."""
    return classify(target, environments)[0]


def classify(target: Target | str, environments: dict[str, Environment], *,
             resolver: Resolver = socket.getaddrinfo) -> tuple[Environment, Target]:
    """The environment ``target`` belongs to, and the target resolved (looked up once, here, if not yet).

    A string is parsed first (the reaper's targets). Production by name is
    refused before any lookup; then the host is resolved and production by
    address refused; then the environment that lists it, or ``local``.
    """
    if isinstance(target, str):
        try:
            target = parse_target(target)
        except TargetInvalid as exc:
            raise TargetRefused.line(str(exc)) from None
    host = target.host
    for env in environments.values():
        if host in env.hosts and not env.allow_load:
            raise TargetRefused(f"target: {host} belongs to {env.name}, where load is never allowed; fix: target staging")
    if not target.addresses:
        try:
            target = resolve(target, resolver=resolver)
        except TargetInvalid as exc:
            raise TargetRefused.line(str(exc)) from None
    _refuse_production_addresses(target, environments)
    listed = [env for env in environments.values() if host in env.hosts and env.allow_load]
    if len(listed) > 1:
        names = ", ".join(sorted(e.name for e in listed))
        raise TargetRefused(f"target: {host} is listed by more than one environment ({names}); fix: list it once")
    if listed:
        _refuse_override_alias(target, listed[0], environments)
        return listed[0], target
    if target.is_local:
        return environments.get(LOCAL) or _builtin_local(), target
    raise TargetRefused(
        f"target: host {host} is not listed by any environment that allows load; "
        f"fix: add it to loadtests/environments.yaml (or ${ENV_FILE}) under staging"
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
        return {ipaddress.ip_address(host.strip("[]")).compressed}
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return set()
    return {ipaddress.ip_address(info[4][0].split("%")[0]).compressed for info in infos}


def _refuse_production_addresses(target: Target, environments: dict[str, Environment]) -> None:
    """A target whose addresses overlap a production host's (an alias, a raw IP, a CNAME) is production."""
    protected = [(env, h) for env in environments.values() if not env.allow_load for h in env.hosts if h]
    if not protected:
        return
    mine = set(target.addresses) or addresses_of(target.host)
    for env, other in protected:
        shared = sorted(mine & addresses_of(other))
        if shared:
            raise TargetRefused(
                f"target: {target.host} resolves to {shared[0]}, an address of {other} in {env.name}, "
                "where load is never allowed; fix: target staging"
            )


def _refuse_override_alias(target: Target, chosen: Environment, environments: dict[str, Environment]) -> None:
    """An environment the Variable added may not claim, by another name, a host of a reviewed environment."""
    if chosen.source != "override":
        return
    mine = set(target.addresses)
    for env in environments.values():
        if env.source == "override" or env is chosen:
            continue
        for other in env.hosts:
            if mine & addresses_of(other):
                raise TargetRefused(
                    f"target: {target.host} shares an address with {other} of the reviewed environment {env.name}; "
                    f"fix: target {other} under {env.name}"
                )
