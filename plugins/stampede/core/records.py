"""Typed records of a run's outcome, and the stable results.json contract.

results.json keys are a public contract (DESIGN.md §2): add keys, never rename.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

Verdict = Literal["pass", "fail", "invalid"]
LONG_SERIES = 4 * 3600  # seconds of series beyond which results.json is written compact


@dataclass
class Check:
    """One threshold judged on one stage: ``value op threshold`` must hold."""

    metric: str  # p95_ms | p99_ms | error_rate | min_rps
    op: str  # "<" or ">"
    threshold: float
    value: float | None
    passed: bool


@dataclass
class EndpointResult:
    name: str
    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class PhaseFigures:
    """Figures of one part of a stage (its ramp or its steady part)."""

    duration_s: float
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    error_rate: float


@dataclass
class StageResult:
    """One stage, computed from that stage's own requests only (steady part judged)."""

    name: str
    scenario: str
    users: int
    duration_s: float
    requests: int
    failures: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    error_rate: float
    endpoints: list[EndpointResult] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    passed: bool = True
    judged_on: str = "steady"  # which part the figures and checks come from: steady | whole
    ramp: PhaseFigures | None = None
    steady: PhaseFigures | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    abort_on_breach: bool = False
    valid: bool = True
    # open model (arrival rate) only: planned iterations/s, iterations started, iterations that found no free user
    target_rate: float | None = None
    iterations: int | None = None
    dropped_iterations: int | None = None


@dataclass
class GeneratorHealth:
    cpu_max_pct: float = 0.0
    memory_max_mib: float = 0.0
    saturated: bool = False
    limit_pct: float = 85.0
    processes: int = 0
    demand_max_pct: float = 0.0  # peak sustained CPU + run-queue wait (what a generator wanted), % of a core
    workers: int = 0  # load-generating processes the run used (1 for a single local process)
    recommended_workers: int | None = None  # how many to use so each stays under the limit with headroom
    advice: str = ""  # one line for people: who was the limit, and what to do


@dataclass
class CleanupResult:
    created: int = 0
    deleted: int = 0
    left: int = 0
    ok: bool = True
    error: str | None = None


@dataclass
class RunResult:
    run_id: str
    scenario: str
    target: str
    verdict: Verdict
    started_at: str
    finished_at: str
    stages: list[StageResult]
    generator: GeneratorHealth = field(default_factory=GeneratorHealth)
    cleanup: CleanupResult = field(default_factory=CleanupResult)
    environment: str = "local"
    run_tag: str = ""
    aborted: bool = False  # the load stopped before its planned end (kill switch or abort threshold)
    stopped: dict[str, Any] | None = None  # why it stopped early: {reason, kind, at, ...}
    breaches: list[dict[str, Any]] = field(default_factory=list)
    series: list[dict[str, Any]] = field(default_factory=list)
    workers: int = 0
    validation: dict[str, Any] = field(default_factory=dict)
    report_path: str | None = None
    # capacity model (stampede.analysis.capacity) and breaking-point search (stampede.analysis.breaking_point)
    capacity: dict[str, Any] | None = None
    breaking_point: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    # analysis (stampede.steps.analyse): server metrics summary, ranked findings, baseline comparison,
    # the last runs of the same scenario and target, scaling recommendations
    server: dict[str, Any] = field(default_factory=dict)
    bottlenecks: list[dict[str, Any]] = field(default_factory=list)
    comparison: dict[str, Any] = field(default_factory=dict)
    trend: list[dict[str, Any]] = field(default_factory=list)
    recommendations: dict[str, Any] = field(default_factory=dict)
    # cloud cost (stampede.cost.estimate): {provider, workers, size, estimate_usd, actual_usd, ...}; None for no record
    cost: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        # asdict deep-copies recursively: on a 24-hour series (86,400 plain dicts) that takes
        # tens of seconds, so the series, already plain data, is copied one level only
        data = asdict(replace(self, series=[]))
        data["series"] = [dict(row) for row in self.series]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        stages = []
        for raw in data.get("stages", []):
            raw = dict(raw)
            raw["endpoints"] = [EndpointResult(**e) for e in raw.get("endpoints", [])]
            raw["checks"] = [Check(**c) for c in raw.get("checks", [])]
            for part in ("ramp", "steady"):
                if raw.get(part):
                    raw[part] = PhaseFigures(**raw[part])
            stages.append(StageResult(**raw))
        fields = dict(data)
        fields["stages"] = stages
        fields["generator"] = GeneratorHealth(**data.get("generator", {}))
        fields["cleanup"] = CleanupResult(**data.get("cleanup", {}))
        return cls(**fields)


def write_results(result: RunResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    # indented for people, except a long run's results: indent forces json's pure-Python encoder
    indent = 2 if len(result.series) <= LONG_SERIES else None
    tmp.write_text(json.dumps(result.to_dict(), indent=indent, default=str))
    tmp.replace(path)
    return path


def read_results(path: Path) -> RunResult:
    return RunResult.from_dict(json.loads(Path(path).read_text()))
