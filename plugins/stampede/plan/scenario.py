"""Scenario files: load a YAML scenario and validate it into typed records.

A scenario is data (stages, journey weights, thresholds), never code. Every
problem is reported as one line that names the field and says how to fix it,
before any load is sent.

Two load models:

- ``model: closed`` (the default): users with think time. Stages are
  ``{name, users, spawn_rate, duration_s}``; the rate follows from the users,
  their think time and the target's latency.
- ``model: open``: an arrival rate, like k6's constant- and ramping-arrival-rate
  executors. Stages are ``{name, rate, duration_s, max_users[, start_rate,
  spawn_rate]}``: ``rate`` iterations per second (an iteration is one task of a
  journey), going linearly from ``start_rate`` (default: ``rate``, a constant
  rate) to ``rate`` over the stage; ``max_users`` pre-allocated users run them
  (``spawn_rate`` default: all of them within a second). An iteration due while
  every user is busy is not started late but dropped and counted
  (``dropped_iterations``), so latency under overload is measured without
  coordinated omission. ``think_time_s`` does not apply.

Thresholds come in two forms (``docs/scenarios.md``): the seed's mapping
``thresholds: {p95_ms: 200, p99_ms: 500, error_rate: 0.01, min_rps: 100}`` (unchanged), or a
list of rules, each ``{stat, below | above[, endpoint | endpoints | pattern, each, server,
stages, abort, delay_s, window_s, optional, name]}``, parsed into the one
:class:`stampede.core.thresholds.Threshold` type the abort and the validation judge by.

An optional ``search`` block drives the breaking-point search
(``stampede breaking-point``): ``{start_users, max_users, step_factor | step_users,
step_duration_s[, refine_steps, knee_efficiency]}``: the load steps up from
``start_users`` (times ``step_factor``, or plus ``step_users``) until a threshold
breaks or throughput stops growing with the users (it grows by less than
``knee_efficiency``, default 0.5, of the users' relative growth), then bisects
``refine_steps`` (default 3) times between the last good and the first bad step.
In the open model the same block steps the arrival rate (``start_rate``,
``max_rate``, ``step_rate`` instead of the user keys) with ``max_users`` the
pre-allocated users of every step.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from stampede.core import thresholds as threshold_rules
from stampede.core.errors import Refusal
from stampede.core.thresholds import Endpoints, Threshold
from stampede.core.paths import data_dir
from stampede.plan.cleanup_declaration import (
    CleanupDeclaration, CreateRule, hook_parts, parse_cleanup, parse_creates, stock_declaration,
)

SCENARIO_DIR = data_dir("loadtests") / "scenarios"  # the bundled, stock scenarios
# A team's own scenarios folder, searched before the bundled one: its files are scenario *names* in the
# trigger forms and run confs (which never take paths), beside the stock ones.
TEAM_SCENARIOS_ENV = "STAMPEDE_SCENARIOS_DIR"


def scenario_dirs() -> tuple[Path, ...]:
    """The folders whose ``*.yaml`` files are scenario names: the team's (``STAMPEDE_SCENARIOS_DIR``), then stock."""
    team = os.environ.get(TEAM_SCENARIOS_ENV, "").strip()
    return (Path(team), SCENARIO_DIR) if team else (SCENARIO_DIR,)

THRESHOLD_KEYS = threshold_rules.KEYS  # the mapping form's keys
RULE_KEYS = ("stat", "below", "above", "endpoint", "endpoints", "pattern", "each", "server", "stages", "abort",
             "delay_s", "window_s", "optional", "name")  # the list form's keys, in the order docs/scenarios.md gives them
STAT_HELP = "p50, p90, p95, p99, p99.9 (any pN), max, mean, error_rate, rps, requests, dropped_iterations, dropped_rate"
ENDPOINT_NAME = re.compile(r"\S+ \S.*")  # "<request type> <name>", as results.json names endpoints
TOP_LEVEL_KEYS = {
    "name", "description", "journeys", "think_time_s", "stages", "thresholds",
    "abort_on_breach", "abort", "locustfile", "model", "search", "creates", "cleanup", "owner_grace_s",
}
OPEN_STAGE_KEYS = {"name", "rate", "duration_s", "max_users", "start_rate", "spawn_rate"}
MODELS = ("closed", "open")
MAX_RATE = 1_000_000.0  # iterations/s: a typo guard
MAX_SEARCH_STEPS = 40  # step-up steps a search may plan (bounded time)
ABORT_KEYS = ("delay_s", "window_s")
MAX_ABORT_WINDOW_S = 600
STAGE_KEYS = {"name", "users", "spawn_rate", "duration_s"}
# Sanity bounds that catch typos (a stage of 10 million users, a 30-day stage).
MAX_USERS = 200_000
MAX_STAGE_S = 7 * 24 * 3600
# How long the load outlives a dead owner (stampede.load.owner): long enough for a new owner to take over,
# short enough that load nobody owns ends within seconds. None in a scenario: the default.
DEFAULT_OWNER_GRACE_S = 3.0
MIN_OWNER_GRACE_S, MAX_OWNER_GRACE_S = 1.0, 120.0


class ScenarioError(Refusal):
    """A scenario file is missing, unreadable or invalid (one line: field and fix)."""


@dataclass(frozen=True)
class Stage:
    name: str
    users: int  # closed model: users; open model: pre-allocated users (max_users)
    spawn_rate: float
    duration_s: int
    rate: float | None = None  # open model: iterations/s at the stage's end
    start_rate: float | None = None  # open model: iterations/s at its start (None: = rate, constant)
    # the breaking-point search's next step: its level is the owner's word, sent when the step before is judged
    live: bool = False

    def to_dict(self, model: str = "closed") -> dict[str, Any]:
        if model != "open":
            return {"name": self.name, "users": self.users, "spawn_rate": self.spawn_rate, "duration_s": self.duration_s}
        data = {"name": self.name, "rate": self.rate, "duration_s": self.duration_s, "max_users": self.users,
                "spawn_rate": self.spawn_rate}
        if self.start_rate is not None:
            data["start_rate"] = self.start_rate
        return data


@dataclass(frozen=True)
class Search:
    """How the breaking-point search steps the load (users, or iterations/s in the open model)."""

    start: float
    maximum: float
    step_duration_s: int
    refine_steps: int = 3
    step_factor: float | None = None
    step_increment: float | None = None
    knee_efficiency: float = 0.5
    max_users: int | None = None  # open model: pre-allocated users per step

    def to_dict(self, model: str = "closed") -> dict[str, Any]:
        unit = "rate" if model == "open" else "users"
        data: dict[str, Any] = {f"start_{unit}": self.start, f"max_{unit}": self.maximum,
                                "step_duration_s": self.step_duration_s, "refine_steps": self.refine_steps,
                                "knee_efficiency": self.knee_efficiency}
        if model != "open":
            data = {k: int(v) if k in ("start_users", "max_users") else v for k, v in data.items()}
        if self.step_factor is not None:
            data["step_factor"] = self.step_factor
        if self.step_increment is not None:
            data[f"step_{unit}"] = self.step_increment if model == "open" else int(self.step_increment)
        if model == "open" and self.max_users is not None:
            data["max_users"] = self.max_users
        return data


@dataclass(frozen=True)
class Thresholds:
    p95_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float | None = None
    min_rps: float | None = None

    def items(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in asdict(self).items() if v is not None]


def judged_stages(stages: tuple[Stage, ...] | list[Stage]) -> list[bool]:
    """Which of a scenario's stages are judged: those that raise or hold the load.

    A stage that lowers it (ramp-down, recovery to fewer users) is reported but not judged; the
    first stage is compared with 0 users. In the open model ``users`` is ``max_users``.
    """
    judged, previous = [], 0
    for stage in stages:
        judged.append(stage.users > 0 and stage.users >= previous)
        previous = stage.users
    return judged


@dataclass(frozen=True)
class AbortPolicy:
    """When abort thresholds are judged: after ``delay_s`` of steady load, over the last ``window_s``.

    ``None`` keeps the defaults (window 10 s, delay twice the window), like k6's
    ``abortOnFail`` with ``delayAbortEval``.
    """

    delay_s: int | None = None
    window_s: int | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    journeys: dict[str, float]
    think_time_s: tuple[float, float]
    stages: tuple[Stage, ...]
    thresholds: Thresholds = field(default_factory=Thresholds)  # the legacy view of threshold_rules
    abort_on_breach: bool = False
    locustfile: str | None = None
    description: str = ""
    source: str = ""
    abort: AbortPolicy = field(default_factory=AbortPolicy)
    model: str = "closed"  # closed (users with think time) | open (arrival rate)
    search: Search | None = None
    threshold_rules: tuple[Threshold, ...] = ()  # the whole table, both forms
    creates: tuple[CreateRule, ...] = ()  # which requests create what (a team's locustfile, no code)
    cleanup: CleanupDeclaration | None = None  # how to remove what it created (see cleanup_declaration)
    owner_grace_s: float | None = None  # seconds the load outlives a dead owner; None: DEFAULT_OWNER_GRACE_S

    @property
    def cleanup_declaration(self) -> CleanupDeclaration | None:
        """The declared cleanup; the stock CRM's for the stock journeys; ``None``: nothing declared."""
        if self.cleanup is not None:
            return self.cleanup
        return stock_declaration() if self.locustfile is None else None

    @property
    def peak_users(self) -> int:
        return max(s.users for s in self.stages)

    @property
    def duration_s(self) -> int:
        return sum(s.duration_s for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["think_time_s"] = list(self.think_time_s)
        data["stages"] = [s.to_dict(self.model) for s in self.stages]
        del data["threshold_rules"]
        if all(rule.key for rule in self.threshold_rules):
            data["thresholds"] = dict(self.thresholds.items())
        else:
            data["thresholds"] = [rule_to_dict(rule) for rule in self.threshold_rules]
        if self.search is None:
            del data["search"]
        else:
            data["search"] = self.search.to_dict(self.model)
        if data["locustfile"] is None:
            del data["locustfile"]
        if data["owner_grace_s"] is None:
            del data["owner_grace_s"]
        _test_data_to_dict(self, data)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Scenario:
        """Rebuild a scenario that was already validated (for example from XCom)."""
        return parse_scenario(
            {k: v for k, v in data.items() if k != "source"}, source=data.get("source", "<dict>")
        )

    def with_overrides(self, *, users: int | None = None, duration_s: int | None = None) -> Scenario:
        """Scale every stage to a new peak user count and/or total duration (manual runs)."""
        if users is None and duration_s is None:
            return self
        stages = list(self.stages)
        if users is not None:
            factor = users / self.peak_users
            # the ramps keep their length: spawn rates scale with the users
            stages = [
                replace(s, users=max(1, round(s.users * factor)) if s.users else 0, spawn_rate=max(0.1, s.spawn_rate * factor))
                for s in stages
            ]
        if duration_s is not None:
            factor = duration_s / self.duration_s
            # the ramps keep their share of the run: spawn rates scale inversely with the time
            stages = [
                replace(s, spawn_rate=s.spawn_rate / factor, duration_s=max(1, round(s.duration_s * factor))) for s in stages
            ]
        data = self.to_dict()
        data["stages"] = [s.to_dict(self.model) for s in stages]
        return Scenario.from_dict(data)


def _folders(directory: Path | None) -> tuple[Path, ...]:
    return (Path(directory),) if directory is not None else scenario_dirs()


def available_scenarios(directory: Path | None = None) -> list[str]:
    return sorted({p.stem for folder in _folders(directory) for p in folder.glob("*.yaml")})


def _named(name: str, directory: Path | None) -> Path | None:
    """The first folder's file for ``name`` (the team's folder wins over the stock one), or None."""
    for folder in _folders(directory):
        path = folder / f"{name}.yaml"
        if path.is_file() and path.resolve().parent == folder.resolve():
            return path
    return None


def resolve_scenario_path(name_or_path: str, directory: Path | None = None) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            raise ScenarioError(f"scenario: file {name_or_path!r} does not exist; fix: give an existing path")
        return candidate
    path = _named(name_or_path, directory)
    if path is None:
        known = ", ".join(available_scenarios(directory)) or "none"
        raise ScenarioError(f"scenario: no scenario named {name_or_path!r}; fix: use one of {known} or a file path")
    return path


def load_scenario(name_or_path: str, directory: Path | None = None) -> Scenario:
    path = resolve_scenario_path(name_or_path, directory)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ScenarioError(f"scenario {path.name}:{where} is not valid YAML; fix: check indentation and quoting") from exc
    scenario = parse_scenario(data, source=str(path))
    if scenario.locustfile:
        locustfile = Path(scenario.locustfile)
        if not locustfile.is_absolute():
            locustfile = (path.parent / locustfile).resolve()
        if not locustfile.is_file():
            raise ScenarioError(
                f"scenario {path.name}: locustfile: {scenario.locustfile!r} not found; fix: give a path relative to the scenario file"
            )
        scenario = Scenario(**{**scenario.__dict__, "locustfile": str(locustfile)})
    return _with_hook_path(scenario, path)


def parse_scenario(data: Any, *, source: str = "<dict>") -> Scenario:
    label = f"scenario {Path(source).name}" if source else "scenario"

    def fail(field_name: str, problem: str, fix: str) -> ScenarioError:
        return ScenarioError(f"{label}: {field_name}: {problem}; fix: {fix}")

    if not isinstance(data, dict):
        raise fail("<top>", "must be a mapping of keys", "start the file with 'name:', 'stages:' ...")
    unknown = sorted(set(data) - TOP_LEVEL_KEYS)
    if unknown:
        raise fail(unknown[0], "unknown key", f"remove it or use one of {', '.join(sorted(TOP_LEVEL_KEYS))}")

    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise fail("name", "missing or empty", "add 'name: <short name>'")

    journeys = data.get("journeys")
    if not isinstance(journeys, dict) or not journeys:
        raise fail("journeys", "missing or empty", "add weights, e.g. 'journeys: {agent: 60, readonly: 40}'")
    for key, weight in journeys.items():
        if not _is_number(weight) or weight < 0:
            raise fail(f"journeys.{key}", f"weight must be a number >= 0 (got {weight!r})", "use a non-negative weight")
    if sum(journeys.values()) <= 0:
        raise fail("journeys", "all weights are zero", "give at least one journey a positive weight")

    think = data.get("think_time_s", [3, 8])
    if (
        not isinstance(think, (list, tuple)) or len(think) != 2
        or not all(_is_number(t) and t >= 0 for t in think) or think[0] > think[1]
    ):
        raise fail("think_time_s", f"must be [min, max] seconds with 0 <= min <= max (got {think!r})", "e.g. 'think_time_s: [3, 8]'")

    model = data.get("model", "closed")
    if model not in MODELS:
        raise fail("model", f"must be closed or open (got {model!r})", "use 'model: closed' (users) or 'model: open' (arrival rate)")
    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        shape = "{name, rate, duration_s, max_users}" if model == "open" else "{name, users, spawn_rate, duration_s}"
        raise fail("stages", "missing or empty", f"add a list of {shape}")
    parse_stage = _parse_open_stage if model == "open" else _parse_stage
    stages = tuple(parse_stage(i, s, fail) for i, s in enumerate(raw_stages))
    names = [s.name for s in stages]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise fail("stages", f"stage name {duplicate!r} is used twice", "give every stage a unique name")
    if all(s.users == 0 for s in stages):
        raise fail("stages", "every stage has 0 users: nothing would be sent", "give at least one stage users")

    rules = _parse_thresholds(data.get("thresholds"), stages, model, fail)

    abort = data.get("abort_on_breach", False)
    if not isinstance(abort, bool):
        raise fail("abort_on_breach", f"must be true or false (got {abort!r})", "use true or false")
    abort_policy = _parse_abort(data.get("abort"), fail)
    locustfile = data.get("locustfile")
    if locustfile is not None and (not isinstance(locustfile, str) or not locustfile.strip()):
        raise fail("locustfile", "must be a path", "give the path of your locustfile")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "must be text", "quote the description")

    search = _parse_search(data["search"], model, fail) if data.get("search") is not None else None
    grace = data.get("owner_grace_s")
    if grace is not None and (not _is_number(grace) or not MIN_OWNER_GRACE_S <= grace <= MAX_OWNER_GRACE_S):
        raise fail("owner_grace_s", f"must be seconds from {MIN_OWNER_GRACE_S:g} to {MAX_OWNER_GRACE_S:g} (got {grace!r})",
                   f"leave it out (default {DEFAULT_OWNER_GRACE_S:g} s) or give e.g. 'owner_grace_s: 90' for a long run "
                   "that a retried task may take over")
    creates, cleanup = _parse_test_data(data, fail, source=source)

    return Scenario(
        name=name.strip(),
        journeys={str(k): float(v) for k, v in journeys.items()},
        think_time_s=(float(think[0]), float(think[1])),
        stages=stages,
        thresholds=Thresholds(**threshold_rules.legacy_view(rules)),
        abort_on_breach=abort,
        locustfile=locustfile,
        description=description,
        source=source,
        abort=abort_policy,
        model=model,
        search=search,
        threshold_rules=rules,
        creates=creates,
        cleanup=cleanup,
        owner_grace_s=float(grace) if grace is not None else None,
    )


def _parse_thresholds(raw: Any, stages: tuple[Stage, ...], model: str, fail) -> tuple[Threshold, ...]:
    """The seed's mapping ``{p95_ms: 200, ...}`` (unchanged), or a list of rules."""
    if raw is None or raw == {} or raw == []:
        return ()
    if isinstance(raw, list):
        rules = tuple(_parse_rule(i, item, stages, model, fail) for i, item in enumerate(raw))
        labels = [rule.label(rule.endpoints.label if rule.endpoints else None) for rule in rules]
        twice = next((i for i, label in enumerate(labels) if labels.index(label) != i), None)
        if twice is not None:
            raise fail(f"thresholds[{twice}]", f"says the same as thresholds[{labels.index(labels[twice])}] "
                       f"({labels[twice]!r})", "remove one, or give each a different 'name:'")
        return rules
    if not isinstance(raw, dict):
        raise fail("thresholds", "must be a mapping or a list",
                   f"use keys {', '.join(THRESHOLD_KEYS)}, or a list of {{stat, below|above, ...}}")
    unknown = sorted(set(raw) - set(THRESHOLD_KEYS))
    if unknown:
        raise fail(f"thresholds.{unknown[0]}", "unknown threshold",
                   f"use one of {', '.join(THRESHOLD_KEYS)}, or the list form (e.g. '- {{stat: p90, below: 100}}')")
    for key, value in raw.items():
        if not _is_number(value) or value < 0:
            raise fail(f"thresholds.{key}", f"must be a number >= 0 (got {value!r})", "use a non-negative number")
    if "error_rate" in raw and raw["error_rate"] > 1:
        raise fail("thresholds.error_rate", f"is a fraction (got {raw['error_rate']})", "write 1 % as 0.01")
    return tuple(threshold_rules.table(raw))


def _parse_rule(index: int, raw: Any, stages: tuple[Stage, ...], model: str, fail) -> Threshold:
    """One rule of the list form: every problem is one line naming ``thresholds[i].<key>``."""
    where = f"thresholds[{index}]"
    if not isinstance(raw, dict):
        raise fail(where, "must be a mapping", 'use e.g. {stat: p95, below: 200, endpoint: "GET /listings"}')
    unknown = sorted(set(raw) - set(RULE_KEYS), key=str)
    if unknown:
        raise fail(f"{where}.{unknown[0]}", "unknown key", f"use {', '.join(RULE_KEYS)}")
    server = raw.get("server")
    if "server" in raw and (not isinstance(server, str) or not server.strip()):
        raise fail(f"{where}.server", f"must name a sampled series (got {server!r})",
                   "e.g. 'server: db_pool_waiting' (the series of the environment's metrics block)")
    stat = raw.get("stat", "max" if server else None)
    if stat is None:
        raise fail(f"{where}.stat", "missing", f"add e.g. 'stat: p95' (one of {STAT_HELP})")
    if not isinstance(stat, str) or not threshold_rules.known_stat(stat, server=server is not None):
        stats = "max, mean, min, last or a percentile such as p95" if server else STAT_HELP
        problem = (f"percentile must be above 0 and at most 100 (got {stat})"
                   if isinstance(stat, str) and threshold_rules.PERCENTILE.fullmatch(stat) else f"unknown statistic {stat!r}")
        raise fail(f"{where}.stat", problem, f"use one of {stats}")
    if stat in threshold_rules.STAGE_ONLY and model != "open":
        raise fail(f"{where}.stat", f"{stat} exists only in the open model", "use 'model: open' or another statistic")
    op, limit = _rule_limit(where, raw, stat, server, fail)
    endpoints = _rule_endpoints(where, raw, stat, server, fail)
    applies = _rule_stages(where, raw, stages, fail)
    abort = _rule_flag(where, raw, "abort", fail)
    if abort and stat in threshold_rules.NEVER_MID_RUN and not server:
        raise fail(f"{where}.abort", f"{stat} is judged after the run only (the newest seconds are incomplete)",
                   "remove abort, or abort on a latency or error statistic")
    delay = _rule_seconds(where, raw, "delay_s", 0, MAX_STAGE_S, fail)
    window = _rule_seconds(where, raw, "window_s", 1, MAX_ABORT_WINDOW_S, fail)
    if window is not None:
        longest = max((s.duration_s for s in stages if not applies or s.name in applies), default=0)
        if window > longest:
            raise fail(f"{where}.window_s", f"{window} s is longer than every stage it applies to (at most {longest} s)",
                       "use a shorter window or a longer stage")
    name = raw.get("name")
    if "name" in raw and (not isinstance(name, str) or not name.strip()):
        raise fail(f"{where}.name", f"must be text (got {name!r})", "e.g. 'name: checkout errors'")
    return Threshold(
        stat=stat, op=op, limit=limit, endpoints=endpoints, server=server.strip() if server else None,
        stages=applies, abort=abort, delay_s=delay, window_s=window,
        optional=bool(_rule_flag(where, raw, "optional", fail)), name=name.strip() if name else None,
    )


def _rule_limit(where: str, raw: dict, stat: str, server: str | None, fail) -> tuple[str, float]:
    if ("below" in raw) == ("above" in raw):
        raise fail(where, "give exactly one of below and above", "e.g. 'below: 200' (the value must stay under 200)")
    key = "below" if "below" in raw else "above"
    value = raw[key]
    if not _is_number(value) or (value < 0 and not server):
        raise fail(f"{where}.{key}", f"must be a number >= 0 (got {value!r})", "use a non-negative number")
    if stat in threshold_rules.FRACTIONS and value > 1:
        raise fail(f"{where}.{key}", f"{stat} is a fraction (got {value})", "write 1 % as 0.01")
    return ("<" if key == "below" else ">"), float(value)


def _rule_endpoints(where: str, raw: dict, stat: str, server: str | None, fail) -> Endpoints | None:
    chosen = [k for k in ("endpoint", "endpoints", "pattern") if k in raw]
    if "each" in raw and not chosen:
        raise fail(f"{where}.each", "needs endpoints or a pattern to judge one by one", "add 'pattern:' or 'endpoints:'")
    if not chosen:
        return None
    if len(chosen) > 1:
        raise fail(f"{where}.{chosen[1]}", f"give only one of endpoint, endpoints and pattern (got {' and '.join(chosen)})",
                   "keep one")
    if server:
        raise fail(f"{where}.{chosen[0]}", "a server-side threshold judges a series, not endpoints", f"remove {chosen[0]}")
    if stat in threshold_rules.STAGE_ONLY:
        raise fail(f"{where}.{chosen[0]}", "dropped iterations are counted per stage, not per endpoint",
                   f"remove {chosen[0]}")
    each = bool(_rule_flag(where, raw, "each", fail))
    if chosen[0] == "pattern":
        pattern = raw["pattern"]
        if not isinstance(pattern, str) or not pattern.strip():
            raise fail(f"{where}.pattern", f"must be a regular expression (got {pattern!r})", "e.g. 'pattern: \"GET /escrows.*\"'")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise fail(f"{where}.pattern", f"is not a regular expression ({exc})", "escape special characters") from None
        return Endpoints(pattern=pattern, each=each)
    if chosen[0] == "endpoint":
        if each:
            raise fail(f"{where}.each", "one endpoint is judged alone anyway", "remove each")
        return Endpoints(names=(_endpoint_name(f"{where}.endpoint", raw["endpoint"], fail),))
    names = raw["endpoints"]
    if not isinstance(names, list) or not names:
        raise fail(f"{where}.endpoints", f"must be a non-empty list of endpoint names (got {names!r})",
                   'e.g. endpoints: ["POST /escrows", "PATCH /listings/{id}"]')
    parsed = tuple(_endpoint_name(f"{where}.endpoints[{i}]", n, fail) for i, n in enumerate(names))
    if len(set(parsed)) != len(parsed):
        raise fail(f"{where}.endpoints", "names an endpoint twice", "list each endpoint once")
    return Endpoints(names=parsed, each=each)


def _endpoint_name(field_name: str, value: Any, fail) -> str:
    if not isinstance(value, str) or not ENDPOINT_NAME.fullmatch(value.strip()):
        raise fail(field_name, f"must be '<METHOD> <name>' as results.json names endpoints (got {value!r})",
                   'e.g. "GET /listings" or "GET /escrows/{id}"')
    return value.strip()


def _rule_stages(where: str, raw: dict, stages: tuple[Stage, ...], fail) -> tuple[str, ...]:
    if "stages" not in raw:
        return ()
    names = raw["stages"]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise fail(f"{where}.stages", f"must be a list of stage names (got {names!r})", "e.g. 'stages: [hold]'")
    judged = dict(zip((s.name for s in stages), judged_stages(stages)))
    for name in names:
        if name not in judged:
            raise fail(f"{where}.stages", f"no stage named {name!r}", f"use some of {', '.join(judged)}")
        if not judged[name]:
            raise fail(f"{where}.stages", f"stage {name!r} lowers the load and is never judged",
                       "name a stage that raises or holds the load")
    return tuple(names)


def _rule_flag(where: str, raw: dict, key: str, fail) -> bool | None:
    value = raw.get(key)
    if key in raw and not isinstance(value, bool):
        raise fail(f"{where}.{key}", f"must be true or false (got {value!r})", "use true or false")
    return value


def _rule_seconds(where: str, raw: dict, key: str, low: int, high: int, fail) -> int | None:
    value = raw.get(key)
    if key in raw and (isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high):
        raise fail(f"{where}.{key}", f"must be whole seconds from {low} to {high} (got {value!r})", "use e.g. 30")
    return value


def rule_to_dict(rule: Threshold) -> dict[str, Any]:
    """A rule in the scenario's list form again (``Scenario.to_dict`` round-trips through it)."""
    data: dict[str, Any] = {"stat": rule.stat, ("below" if rule.op == "<" else "above"): rule.limit}
    if rule.endpoints is not None:
        if rule.endpoints.pattern is not None:
            data["pattern"] = rule.endpoints.pattern
        elif len(rule.endpoints.names) == 1 and not rule.endpoints.each:
            data["endpoint"] = rule.endpoints.names[0]
        else:
            data["endpoints"] = list(rule.endpoints.names)
        if rule.endpoints.each:
            data["each"] = True
    optional = {"server": rule.server, "stages": list(rule.stages) or None, "abort": rule.abort,
                "delay_s": rule.delay_s, "window_s": rule.window_s, "optional": rule.optional or None, "name": rule.name}
    data.update({k: v for k, v in optional.items() if v is not None})
    return data


# -- test data: what the run creates and how to remove it (stampede.plan.cleanup_declaration) -----------------
def _parse_test_data(data: dict[str, Any], fail, *, source: str) -> tuple[tuple[CreateRule, ...], CleanupDeclaration | None]:
    creates = parse_creates(data.get("creates"), fail)
    cleanup = parse_cleanup(data.get("cleanup"), fail, source=Path(source).name if source else "")
    declared = set(cleanup.kinds) if cleanup is not None else set()
    for index, rule in enumerate(creates):
        if cleanup is not None and cleanup.creates_nothing:
            raise fail("cleanup", "is none, but creates declares what the run creates",
                       f"declare cleanup.kinds.{rule.kind}, or remove the creates rules")
        if cleanup is None or (not cleanup.hook and rule.kind not in declared):
            raise fail(f"creates[{index}].kind", f"{rule.kind!r} has no cleanup declared",
                       f"add cleanup.kinds.{rule.kind} (how to delete one), or a cleanup hook")
    return creates, cleanup


def _test_data_to_dict(scenario: Scenario, data: dict[str, Any]) -> None:
    data["creates"] = [rule.to_dict() for rule in scenario.creates]
    if not data["creates"]:
        del data["creates"]
    if scenario.cleanup is None:
        del data["cleanup"]
    else:
        data["cleanup"] = scenario.cleanup.to_dict()


def _with_hook_path(scenario: Scenario, path: Path) -> Scenario:
    """A cleanup hook's file, like the locustfile, is relative to the scenario file; it must exist."""
    if scenario.cleanup is None or not scenario.cleanup.hook:
        return scenario
    file, function = hook_parts(scenario.cleanup.hook)
    if not file.is_absolute():
        file = (path.parent / file).resolve()
    if not file.is_file():
        raise ScenarioError(
            f"scenario {path.name}: cleanup.hook: {str(hook_parts(scenario.cleanup.hook)[0])!r} not found; "
            "fix: give a path relative to the scenario file"
        )
    return replace(scenario, cleanup=replace(scenario.cleanup, hook=f"{file}:{function}"))


def _parse_abort(raw: Any, fail) -> AbortPolicy:
    if raw is None:
        return AbortPolicy()
    if not isinstance(raw, dict):
        raise fail("abort", "must be a mapping", "use e.g. 'abort: {delay_s: 30, window_s: 10}'")
    unknown = sorted(set(raw) - set(ABORT_KEYS))
    if unknown:
        raise fail(f"abort.{unknown[0]}", "unknown key", f"use {', '.join(ABORT_KEYS)}")
    window, delay = raw.get("window_s"), raw.get("delay_s")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_ABORT_WINDOW_S):
        raise fail("abort.window_s", f"must be whole seconds from 1 to {MAX_ABORT_WINDOW_S} (got {window!r})", "use e.g. 10")
    if delay is not None and (isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= MAX_STAGE_S):
        raise fail("abort.delay_s", f"must be whole seconds from 0 to {MAX_STAGE_S} (got {delay!r})", "use e.g. 30")
    return AbortPolicy(delay_s=delay, window_s=window)


def _parse_stage(index: int, raw: Any, fail) -> Stage:
    where = f"stages[{index}]"
    if not isinstance(raw, dict):
        raise fail(where, "must be a mapping", "use {name, users, spawn_rate, duration_s}")
    unknown = sorted(set(raw) - STAGE_KEYS)
    if unknown:
        raise fail(f"{where}.{unknown[0]}", "unknown key", f"use {', '.join(sorted(STAGE_KEYS))}")
    missing = [k for k in ("name", "users", "spawn_rate", "duration_s") if k not in raw]
    if missing:
        raise fail(f"{where}.{missing[0]}", "missing", f"add '{missing[0]}:' to the stage")
    name = raw["name"]
    if not isinstance(name, str) or not name.strip():
        raise fail(f"{where}.name", "must be a non-empty string", "name the stage, e.g. 'ramp'")
    users = raw["users"]
    if isinstance(users, bool) or not isinstance(users, int) or users < 0 or users > MAX_USERS:
        raise fail(f"{where}.users", f"must be a whole number from 0 to {MAX_USERS} (got {users!r})", "use a user count such as 1000")
    rate = raw["spawn_rate"]
    if not _is_number(rate) or rate <= 0:
        raise fail(f"{where}.spawn_rate", f"must be a number > 0 users/s (got {rate!r})", "use e.g. 10")
    duration = raw["duration_s"]
    if isinstance(duration, bool) or not isinstance(duration, int) or duration <= 0 or duration > MAX_STAGE_S:
        raise fail(f"{where}.duration_s", f"must be whole seconds from 1 to {MAX_STAGE_S} (got {duration!r})", "use e.g. 300")
    return Stage(name=name.strip(), users=users, spawn_rate=float(rate), duration_s=duration)


def _parse_open_stage(index: int, raw: Any, fail) -> Stage:
    where = f"stages[{index}]"
    if not isinstance(raw, dict):
        raise fail(where, "must be a mapping", "use {name, rate, duration_s, max_users}")
    unknown = sorted(set(raw) - OPEN_STAGE_KEYS)
    if unknown:
        hint = " in the open model (users are max_users)" if unknown[0] == "users" else ""
        raise fail(f"{where}.{unknown[0]}", f"unknown key{hint}", f"use {', '.join(sorted(OPEN_STAGE_KEYS))}")
    missing = [k for k in ("name", "rate", "duration_s", "max_users") if k not in raw]
    if missing:
        raise fail(f"{where}.{missing[0]}", "missing", f"add '{missing[0]}:' to the stage")
    name = raw["name"]
    if not isinstance(name, str) or not name.strip():
        raise fail(f"{where}.name", "must be a non-empty string", "name the stage, e.g. 'hold'")
    rates: dict[str, float | None] = {}
    for key in ("rate", "start_rate"):
        value = raw.get(key)
        if key in raw and (not _is_number(value) or value < 0 or value > MAX_RATE):
            raise fail(f"{where}.{key}", f"must be iterations/s from 0 to {MAX_RATE:g} (got {value!r})", "use e.g. 50")
        rates[key] = float(value) if key in raw else None
    users = raw["max_users"]
    if isinstance(users, bool) or not isinstance(users, int) or users < 1 or users > MAX_USERS:
        raise fail(f"{where}.max_users", f"must be a whole number from 1 to {MAX_USERS} (got {users!r})", "use e.g. 100")
    spawn = raw.get("spawn_rate", users)
    if not _is_number(spawn) or spawn <= 0:
        raise fail(f"{where}.spawn_rate", f"must be a number > 0 users/s (got {spawn!r})", "leave it out or use e.g. 100")
    duration = raw["duration_s"]
    if isinstance(duration, bool) or not isinstance(duration, int) or duration <= 0 or duration > MAX_STAGE_S:
        raise fail(f"{where}.duration_s", f"must be whole seconds from 1 to {MAX_STAGE_S} (got {duration!r})", "use e.g. 300")
    return Stage(name=name.strip(), users=users, spawn_rate=float(spawn), duration_s=duration,
                 rate=rates["rate"], start_rate=rates["start_rate"])


def _parse_search(raw: Any, model: str, fail) -> Search:
    unit = "rate" if model == "open" else "users"
    if not isinstance(raw, dict):
        raise fail("search", "must be a mapping", f"use {{start_{unit}, max_{unit}, step_factor, step_duration_s}}")
    allowed = {"step_factor", "step_duration_s", "refine_steps", "knee_efficiency", f"start_{unit}", f"max_{unit}", f"step_{unit}"}
    if model == "open":
        allowed.add("max_users")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise fail(f"search.{unknown[0]}", f"unknown key in the {model} model", f"use {', '.join(sorted(allowed))}")
    for key in (f"start_{unit}", f"max_{unit}", "step_duration_s") + (("max_users",) if model == "open" else ()):
        if key not in raw:
            raise fail(f"search.{key}", "missing", f"add '{key}:' to search")

    def number(key: str, *, whole: bool, low: float, high: float) -> float:
        value = raw[key]
        if not (_is_number(value) and (isinstance(value, int) or not whole) and low <= value <= high):
            kind = "a whole number" if whole else "a number"
            raise fail(f"search.{key}", f"must be {kind} from {low:g} to {high:g} (got {value!r})", "fix the value")
        return float(value)

    whole = model != "open"
    top = MAX_RATE if model == "open" else MAX_USERS
    start = number(f"start_{unit}", whole=whole, low=1, high=top)
    maximum = number(f"max_{unit}", whole=whole, low=1, high=top)
    if maximum <= start:
        raise fail(f"search.max_{unit}", f"must be above start_{unit} ({maximum:g} <= {start:g})", f"raise max_{unit}")
    if ("step_factor" in raw) == (f"step_{unit}" in raw):
        raise fail("search.step_factor", f"give exactly one of step_factor and step_{unit}", "e.g. 'step_factor: 2'")
    factor = number("step_factor", whole=False, low=1.05, high=10) if "step_factor" in raw else None
    increment = number(f"step_{unit}", whole=whole, low=1, high=top) if factor is None else None
    steps = math.ceil(math.log(maximum / start, factor)) if factor else math.ceil((maximum - start) / increment)
    if steps + 1 > MAX_SEARCH_STEPS:
        raise fail("search", f"plans {steps + 1} steps, more than {MAX_SEARCH_STEPS}", "raise the step or narrow the range")
    duration = int(number("step_duration_s", whole=True, low=3, high=3600))
    refine = int(number("refine_steps", whole=True, low=0, high=10)) if "refine_steps" in raw else 3
    knee = number("knee_efficiency", whole=False, low=0, high=1) if "knee_efficiency" in raw else 0.5
    max_users = int(number("max_users", whole=True, low=1, high=MAX_USERS)) if model == "open" else None
    return Search(start=start, maximum=maximum, step_duration_s=duration, refine_steps=refine,
                  step_factor=factor, step_increment=increment, knee_efficiency=knee, max_users=max_users)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# -- names from forms and run confs: files of the scenarios folder only ----------------------------
SCENARIO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def load_named_scenario(name: Any, directory: Path | None = None) -> Scenario:
    """The scenario *named* ``name`` in ``directory``; never a path (a trigger form or run conf is not trusted
    with paths: a scenario's ``locustfile:`` runs Python, so a path could run any file)."""
    known = ", ".join(available_scenarios(directory)) or "none"
    if not isinstance(name, str) or not SCENARIO_NAME.fullmatch(name):
        raise ScenarioError(f"scenario: {str(name)[:80]!r} is not the name of a scenario file; fix: use one of {known} "
                            "(paths are accepted from the command line only)")
    path = _named(name, directory)
    if path is None:
        raise ScenarioError(f"scenario: no scenario named {name!r}; fix: use one of {known}")
    return load_scenario(str(path), directory)
