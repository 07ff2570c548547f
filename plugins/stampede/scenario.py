"""Scenario files: load a YAML scenario and validate it into typed records.

A scenario is data (stages, journey weights, thresholds), never code. Every
problem is reported as one line that names the field and says how to fix it,
before any load is sent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "loadtests" / "scenarios"

THRESHOLD_KEYS = ("p95_ms", "p99_ms", "error_rate", "min_rps")
TOP_LEVEL_KEYS = {
    "name", "description", "journeys", "think_time_s", "stages", "thresholds",
    "abort_on_breach", "locustfile",
}
STAGE_KEYS = {"name", "users", "spawn_rate", "duration_s"}
# Sanity bounds that catch typos (a stage of 10 million users, a 30-day stage).
MAX_USERS = 200_000
MAX_STAGE_S = 7 * 24 * 3600


class ScenarioError(ValueError):
    """A scenario file is missing, unreadable or invalid (one line: field and fix)."""


@dataclass(frozen=True)
class Stage:
    name: str
    users: int
    spawn_rate: float
    duration_s: int


@dataclass(frozen=True)
class Thresholds:
    p95_ms: float | None = None
    p99_ms: float | None = None
    error_rate: float | None = None
    min_rps: float | None = None

    def items(self) -> list[tuple[str, float]]:
        return [(k, v) for k, v in asdict(self).items() if v is not None]


@dataclass(frozen=True)
class Scenario:
    name: str
    journeys: dict[str, float]
    think_time_s: tuple[float, float]
    stages: tuple[Stage, ...]
    thresholds: Thresholds = field(default_factory=Thresholds)
    abort_on_breach: bool = False
    locustfile: str | None = None
    description: str = ""
    source: str = ""

    @property
    def peak_users(self) -> int:
        return max(s.users for s in self.stages)

    @property
    def duration_s(self) -> int:
        return sum(s.duration_s for s in self.stages)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["think_time_s"] = list(self.think_time_s)
        data["stages"] = [asdict(s) for s in self.stages]
        data["thresholds"] = dict(self.thresholds.items())
        if data["locustfile"] is None:
            del data["locustfile"]
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
                Stage(s.name, max(1, round(s.users * factor)) if s.users else 0, max(0.1, s.spawn_rate * factor), s.duration_s)
                for s in stages
            ]
        if duration_s is not None:
            factor = duration_s / self.duration_s
            # the ramps keep their share of the run: spawn rates scale inversely with the time
            stages = [
                Stage(s.name, s.users, s.spawn_rate / factor, max(1, round(s.duration_s * factor))) for s in stages
            ]
        data = self.to_dict()
        data["stages"] = [asdict(s) for s in stages]
        return Scenario.from_dict(data)


def available_scenarios(directory: Path = SCENARIO_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def resolve_scenario_path(name_or_path: str, directory: Path = SCENARIO_DIR) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            raise ScenarioError(f"scenario: file {name_or_path!r} does not exist; fix: give an existing path")
        return candidate
    path = directory / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(available_scenarios(directory)) or "none"
        raise ScenarioError(f"scenario: no scenario named {name_or_path!r}; fix: use one of {known} or a file path")
    return path


def load_scenario(name_or_path: str, directory: Path = SCENARIO_DIR) -> Scenario:
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
    return scenario


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

    raw_stages = data.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise fail("stages", "missing or empty", "add a list of {name, users, spawn_rate, duration_s}")
    stages = tuple(_parse_stage(i, s, fail) for i, s in enumerate(raw_stages))
    names = [s.name for s in stages]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise fail("stages", f"stage name {duplicate!r} is used twice", "give every stage a unique name")

    raw_thresholds = data.get("thresholds") or {}
    if not isinstance(raw_thresholds, dict):
        raise fail("thresholds", "must be a mapping", f"use keys {', '.join(THRESHOLD_KEYS)}")
    unknown = sorted(set(raw_thresholds) - set(THRESHOLD_KEYS))
    if unknown:
        raise fail(f"thresholds.{unknown[0]}", "unknown threshold", f"use one of {', '.join(THRESHOLD_KEYS)}")
    for key, value in raw_thresholds.items():
        if not _is_number(value) or value < 0:
            raise fail(f"thresholds.{key}", f"must be a number >= 0 (got {value!r})", "use a non-negative number")
    if "error_rate" in raw_thresholds and raw_thresholds["error_rate"] > 1:
        raise fail("thresholds.error_rate", f"is a fraction (got {raw_thresholds['error_rate']})", "write 1 % as 0.01")

    abort = data.get("abort_on_breach", False)
    if not isinstance(abort, bool):
        raise fail("abort_on_breach", f"must be true or false (got {abort!r})", "use true or false")
    locustfile = data.get("locustfile")
    if locustfile is not None and (not isinstance(locustfile, str) or not locustfile.strip()):
        raise fail("locustfile", "must be a path", "give the path of your locustfile")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise fail("description", "must be text", "quote the description")

    return Scenario(
        name=name.strip(),
        journeys={str(k): float(v) for k, v in journeys.items()},
        think_time_s=(float(think[0]), float(think[1])),
        stages=stages,
        thresholds=Thresholds(**{k: float(v) for k, v in raw_thresholds.items()}),
        abort_on_breach=abort,
        locustfile=locustfile,
        description=description,
        source=source,
    )


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


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
