"""Typed records of a run's outcome, and the stable results.json contract.

Every part of a run's result is a dataclass here, from the stages' figures to
the breaking point, the baseline comparison and the cost. Steps and domain
modules pass these records to each other; they become JSON only when
results.json is written (:func:`write_results`) and records again when it is
read (:func:`read_results`). results.json's keys are a public contract
(``docs/results.md``): add keys, never rename.

``from_dict`` is generic: it builds nested records from their type hints and
ignores keys it does not know (a newer writer's additions), so an older reader
never fails on a newer file.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import math
import operator
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from stampede.core.stops import StopKind, stop_kind
from stampede.core.verdict import Verdict

LONG_SERIES = 4 * 3600  # seconds of series beyond which results.json is written compact
T = TypeVar("T")


# -- generic conversion -----------------------------------------------------------------------------------
@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(tp: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        return _build(options[0], value) if len(options) == 1 else value
    if origin in (list, tuple):
        (item,) = typing.get_args(tp)[:1] or (Any,)
        return [_build(item, v) for v in value]
    if origin is dict:
        _, item = typing.get_args(tp) or (Any, Any)
        return {k: _build(item, v) for k, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value)
    if tp is StopKind:
        return stop_kind(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """``cls`` from its JSON form; nested records from their type hints; unknown keys ignored."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: _build(hints[k], v) for k, v in data.items() if k in names})


def to_dict(record: Any) -> dict[str, Any]:
    return asdict(record)


# -- stages -------------------------------------------------------------------------------------------------
@dataclass
class Check:
    """One threshold judged on one stage (and one endpoint, group or series): ``value op threshold`` must hold.

    A threshold that could not be judged (no requests to its endpoint, no server samples) is a
    check with ``judged`` false, ``value`` ``None``, ``passed`` false and the ``reason``: it fails
    its stage unless it is ``optional``. Nothing is reported as passed that was not measured.
    """

    metric: str  # the figure: the scenario's key (p95_ms, min_rps, ...), p99.9_ms, max_ms, db_pool_waiting.max, requests
    op: str  # "<" or ">"
    threshold: float
    value: float | None  # the measured value (a windowed threshold's worst window); None: not judged
    passed: bool  # judged and held
    name: str = ""  # the threshold for people and JUnit: "GET /listings p95 < 200 ms"
    endpoint: str | None = None  # the endpoint, group or pattern judged; None: all the stage's requests
    stat: str = ""  # p95, p99.9, max, mean, error_rate, rps, requests, dropped_iterations, dropped_rate, ...
    window_s: int | None = None  # judged over every rolling window of this length (value: the worst)
    source: str = "client"  # client (the requests) | server (a series of the target's own metrics)
    judged: bool = True
    optional: bool = False  # not judged does not fail the stage
    reason: str = ""  # why it was not judged
    abort: bool = False  # it could stop the load mid-run
    at: float | None = None  # windowed: the epoch second the worst window ended

    @property
    def fails(self) -> bool:
        """It fails its stage: judged and not held, or not judged and not optional."""
        return not self.passed and (self.judged or not self.optional)

    @property
    def outcome(self) -> str:
        """``pass`` | ``fail`` | ``not judged`` (for people; a not-judged check fails unless optional)."""
        if not self.judged:
            return "not judged"
        return "pass" if self.passed else "fail"


@dataclass
class EndpointResult:
    name: str
    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    errors: dict[str, int] = field(default_factory=dict)
    p90_ms: float | None = None
    max_ms: float | None = None
    mean_ms: float | None = None
    rps: float | None = None
    error_rate: float | None = None


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
    judged_on: str = "steady"  # which part the figures and checks come from: steady | whole | not_run | ramp_down
    ramp: PhaseFigures | None = None
    steady: PhaseFigures | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    abort_on_breach: bool = False
    valid: bool = True
    # open model (arrival rate) only: planned iterations/s, iterations started, iterations that found no free user
    target_rate: float | None = None
    iterations: int | None = None
    dropped_iterations: int | None = None

    @property
    def ran(self) -> bool:
        return self.judged_on != "not_run"

    @property
    def judged(self) -> bool:
        """Held to its thresholds (a stage that ran, and does not lower the load)."""
        return self.judged_on in ("steady", "whole")

    @property
    def outcome(self) -> str:
        """``pass`` | ``fail`` | ``invalid`` | ``not run`` | ``reported`` (a ramp-down), for people."""
        if self.judged_on == "not_run":
            return "not run"
        if self.judged_on == "ramp_down":
            return "reported"
        if not self.valid:
            return "invalid"
        return "pass" if self.passed else "fail"

    def failed_checks(self) -> list[Check]:
        """The checks that fail the stage (breached, or not judged and not optional)."""
        return [c for c in self.checks if c.fails]


# -- the load's own figures ---------------------------------------------------------------------------------
@dataclass(slots=True)
class GeneratorSample:
    """One second of one load-generating process, sampled from outside it."""

    t: float
    role: str  # master | worker
    pid: int
    cpu_pct: float
    rss_mib: float
    wait_pct: float = 0.0  # time runnable but waiting for a core (run queue), % of wall time: starvation


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
    loop_lag_p95_ms: float | None = None  # worst stage's event-loop lag p95 in the generators (how late a timer fired)
    loop_lag_limit_ms: float = 10.0
    delayed: bool = False  # a stage's loop lag sat above the limit: latency was the generator's, not the target's


@dataclass
class Breach:
    """A threshold that did not hold over the abort window while the load ran."""

    stage: str
    metric: str
    threshold: float
    value: float
    at: float  # epoch second
    window_s: int
    name: str = ""  # the threshold for people: "GET /listings p95 < 200 ms"
    endpoint: str | None = None  # the endpoint, group or pattern; None: all the stage's requests (or a series)
    stat: str = ""
    source: str = "client"  # client | server


@dataclass
class Stop:
    """Why the load stopped before its planned end (results.json ``stopped``)."""

    reason: str
    kind: StopKind
    at: float | None = None
    breach: Breach | None = None


@dataclass(slots=True)
class SeriesPoint:
    """One second of the load (results.json ``series[]``)."""

    t: int
    stage: str | None
    phase: str | None
    users: int | None
    requests: int
    failures: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    step: int | None = None  # breaking-point runs: the step the second belongs to


@dataclass
class CleanupKindResult:
    """One kind of entity: what the ledger says was created, what cleanup did, and what is left."""

    created: int = 0
    deleted: int = 0
    already_gone: int = 0  # gone before cleanup came to it (the run deleted it, or an earlier attempt did)
    left: int | None = None
    proof: str = ""  # search | check | none (no cleanup declared)


@dataclass
class CleanupResult:
    """What cleanup did. ``left`` is a count proved after the deletes, or ``None``: not known.

    The defaults read as *not clean*: a cleanup that never ran proved nothing.
    ``created`` is what the run's ledger recorded; ``proof`` says how ``left``
    was established: ``search`` (the API listed what carries the run tag),
    ``check`` (each recorded entity asked for, one by one), ``hook`` (a team's
    cleanup function), ``declared`` (``cleanup: none`` and nothing recorded).
    """

    created: int = 0
    deleted: int = 0
    left: int | None = None
    ok: bool = False
    error: str | None = None
    already_gone: int = 0  # recorded, but gone before cleanup came to it
    resumed: int = 0  # settled (deleted or found gone) by an earlier, interrupted attempt (its journal): not sent again
    swept: int = 0  # carried the run tag but were not in the ledger: found by the search, deleted
    not_ours: int = 0  # an id the API gave to another entity since: never touched
    proof: str = ""
    kinds: dict[str, CleanupKindResult] = field(default_factory=dict)
    requests: int = 0
    throttled: int = 0  # 429 / 503 answers waited out
    duration_s: float | None = None
    deletes_per_s: float | None = None  # entities resolved (deleted or found gone) per second of the delete phase

    @property
    def clean(self) -> bool:
        return self.ok and self.left == 0


# -- analysis -----------------------------------------------------------------------------------------------
@dataclass
class Finding:
    """A bottleneck, with the evidence behind it (results.json ``bottlenecks[]``, ``rank`` 1 first)."""

    kind: str
    subject: str
    title: str
    evidence: list[str] = field(default_factory=list)
    score: float = 0.0
    at_users: int | None = None
    at_s: float | None = None  # seconds since the load started
    rank: int = 0


@dataclass
class DriftFinding:
    """Something that only time showed over a long stage (results.json ``drift.findings[]``).

    ``kind`` is ``latency`` (a percentile rising interval over interval), ``errors`` (a burst well
    above the stage's own error rate) or ``server`` (the target's memory or connections growing
    without falling back). ``start_hour`` is whole hours from the stage's start (0: its first hour).
    """

    kind: str
    stage: str
    subject: str  # "all requests", an endpoint, or a server series
    metric: str  # p50_ms / p95_ms / p99_ms, error_rate, or the server series' unit
    started_at: float  # epoch seconds
    start_offset_s: float  # seconds from the stage's start
    start_hour: int
    title: str
    evidence: list[str] = field(default_factory=list)
    before: float | None = None  # the level before it started (latency, series) or the stage's error rate
    after: float | None = None  # the level at the stage's end, or the burst's error rate
    change_pct: float | None = None  # after against before, in %
    slope_per_hour: float | None = None  # Theil-Sen slope after the start
    ended_at: float | None = None  # a burst's end (epoch seconds)
    values: list[float | None] = field(default_factory=list)  # the level per interval (latency, series)


@dataclass
class Drift:
    """results.json ``drift``: what each long stage showed over time. A warning: it never changes the verdict."""

    stages: list[str] = field(default_factory=list)  # stages analysed
    interval_s: int = 0  # the interval the trends were judged on (3,600 for a day)
    findings: list[DriftFinding] = field(default_factory=list)
    note: str = ""  # why nothing was analysed, or where the figures came from


@dataclass
class PairComparison:
    """One endpoint (or a stage as a whole) against the same in the baseline run."""

    name: str = ""
    verdict: str = ""  # regressed | improved | unchanged | insufficient data | new | gone | not in baseline
    why: str = ""
    requests: int | None = None
    baseline_requests: int | None = None
    p50_ms: float | None = None
    baseline_p50_ms: float | None = None
    p95_ms: float | None = None
    baseline_p95_ms: float | None = None
    error_rate: float | None = None
    baseline_error_rate: float | None = None
    change_ms: float | None = None
    change_pct: float | None = None
    allowed_ms: float | None = None
    p95_ci: list[float | None] | None = None
    baseline_p95_ci: list[float | None] | None = None
    prob_slower: float | None = None
    error_z: float | None = None
    shift_z: float | None = None


@dataclass
class StageComparison(PairComparison):
    users: int | None = None
    baseline_users: int | None = None
    rps: float | None = None
    baseline_rps: float | None = None
    endpoints: list[PairComparison] = field(default_factory=list)


@dataclass
class Regression:
    stage: str
    endpoint: str
    why: str


@dataclass
class Comparison:
    """The run against its baseline (results.json ``comparison``)."""

    verdict: str  # regressed | improved | unchanged | no baseline | unavailable
    why: str = ""
    baseline_run_id: str | None = None
    baseline_started_at: str | None = None
    baseline_verdict: str | None = None
    tolerance: dict[str, float] = field(default_factory=dict)
    regressions: list[Regression] = field(default_factory=list)
    improvements: list[Regression] = field(default_factory=list)
    stages: list[StageComparison] = field(default_factory=list)


@dataclass
class TrendStage:
    users: int | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    rps: float | None = None
    error_rate: float | None = None


@dataclass
class TrendPoint:
    """One earlier run of the same scenario and target (results.json ``trend[]``, oldest first)."""

    run_id: str
    started_at: str
    verdict: str
    stages: dict[str, TrendStage] = field(default_factory=dict)


@dataclass
class Prediction:
    users: int
    rps: float
    extrapolated: bool  # users > EXTRAPOLATION_FACTOR × the largest measured concurrency


@dataclass
class CapacityModel:
    """A fitted Universal Scalability Law (results.json ``capacity``)."""

    model: str
    lambda_rps: float  # throughput of a single user (req/s)
    sigma: float  # contention
    kappa: float  # coherency
    r_squared: float
    points: int
    max_measured_users: float
    peak_users: float | None  # N*, None when κ = 0 (no peak: throughput only flattens)
    peak_rps: float | None  # X(N*), or the asymptote λ/σ when κ = 0; None when unbounded
    predictions: list[Prediction] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.peak_rps is not None and math.isinf(self.peak_rps):
            self.peak_rps = None


@dataclass
class StepFigures:
    """One level of the breaking-point search: its load, its steady figures and how it was judged."""

    index: int
    phase: str  # step (stepping up) | refine (bisecting)
    level: float  # users (closed model) or iterations/s (open model)
    users: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    error_rate: float
    target_rate: float | None = None
    iterations: int | None = None
    dropped_iterations: int | None = None
    valid: bool = True  # False: the generator saturated during the step
    good: bool | None = None
    reasons: list[str] = field(default_factory=list)
    generator_cpu_max_pct: float = 0.0
    generator_demand_max_pct: float = 0.0
    run_dir: str = ""


@dataclass
class BreakingPoint:
    """The most load the target held, and why the next level failed (results.json ``breaking_point``)."""

    reason: str
    found: bool = False
    users: int | None = None
    rps: float | None = None
    p95_ms: float | None = None
    error_rate: float | None = None
    level: float | None = None
    first_bad_level: float | None = None
    first_bad_users: int | None = None
    max_rps: float | None = None
    rate: float | None = None  # open model: iterations/s of the breaking point
    user_cap: int | None = None
    max_level_searched: float | None = None


@dataclass
class ServerStage:
    mean: float
    max: float


@dataclass
class ServerSeries:
    role: str | None = None
    unit: str | None = None
    limit: float | None = None
    samples: int = 0
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    last: float | None = None
    per_stage: dict[str, ServerStage] = field(default_factory=dict)


@dataclass
class ServerSummary:
    """The target's own metrics over the run (results.json ``server``)."""

    source: str = "none"
    url: str | None = None
    errors: int = 0
    first_error: str | None = None
    series: dict[str, ServerSeries] = field(default_factory=dict)


@dataclass
class Goal:
    users: int
    text: str
    factor: float | None = None


@dataclass
class GeneratorPlan:
    """How many generators a run at the goal would need, and what they would cost."""

    text: str
    workers: int | None = None
    machines: int | None = None
    size: str | None = None
    cost_usd: float | None = None
    hourly_usd: float | None = None
    per_worker_users: int | None = None


@dataclass
class Recommendations:
    holds_now: str
    limited_by: str
    goal: Goal
    generators: GeneratorPlan
    actions: list[str] = field(default_factory=list)


@dataclass
class CostRecord:
    """The run's cloud cost (results.json ``cost``): the estimate before, the actual after teardown."""

    provider: str
    workers: int
    size: str
    spot: bool = False
    region: str = ""
    estimate_usd: float | None = None
    actual_usd: float | None = None
    actual_compute_usd: float | None = None
    actual_data_transfer_usd: float | None = None
    worker_hours: float | None = None
    prices_as_of: str | None = None
    recorded_at: str | None = None


# -- the run ------------------------------------------------------------------------------------------------
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
    aborted: bool = False  # the load stopped before its planned end
    stopped: Stop | None = None
    breaches: list[Breach] = field(default_factory=list)
    series: list[SeriesPoint] = field(default_factory=list)
    workers: int = 0
    owner_grace_s: float | None = None  # how long the load outlived a dead owner at most (stampede.load.owner)
    validation: dict[str, Any] = field(default_factory=dict)  # Great Expectations' own result document
    report_path: str | None = None
    capacity: CapacityModel | None = None
    breaking_point: BreakingPoint | None = None
    steps: list[StepFigures] = field(default_factory=list)
    server: ServerSummary | None = None
    bottlenecks: list[Finding] = field(default_factory=list)
    comparison: Comparison | None = None
    trend: list[TrendPoint] = field(default_factory=list)
    recommendations: Recommendations | None = None
    cost: CostRecord | None = None
    drift: Drift | None = None
    figures_source: str = "master"  # "stream": the master died; the figures were rebuilt from its checkpoints
    figures_note: str = ""  # for people: "built from the stream up to 14:02:10 UTC; the master died (exit code -9)"

    @property
    def judged_stages(self) -> list[StageResult]:
        return [s for s in self.stages if s.judged]

    def failed_checks(self) -> list[tuple[StageResult, Check]]:
        return [(s, c) for s in self.stages for c in s.checks if c.fails]

    @property
    def peak_users(self) -> int:
        return max((s.users for s in self.stages if s.requests), default=0)

    def to_dict(self) -> dict[str, Any]:
        # asdict deep-copies recursively: a 24-hour series (86,400 points) is converted by hand, faster
        data = asdict(replace(self, series=[]))
        data["series"] = [_point_dict(p) for p in self.series]
        for key in ("server", "comparison", "recommendations"):  # results.json has always had {} for none
            if data[key] is None:
                data[key] = {}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        fields = {k: v for k, v in data.items() if k != "series"}
        for key in ("server", "comparison", "recommendations"):
            if not fields.get(key):
                fields[key] = None
        result = from_dict(cls, fields)
        result.series = [_point(row) for row in data.get("series") or []]
        return result


_POINT_FIELDS = tuple(f.name for f in dataclasses.fields(SeriesPoint))
_POINT_VALUES = operator.attrgetter(*_POINT_FIELDS)


def _point(row: dict[str, Any]) -> SeriesPoint:
    # a day is 86,400 rows read three times: the common row (the fields, nothing else) goes straight in
    try:
        return SeriesPoint(**row)
    except TypeError:  # a field missing (None then) or one this reader does not know (ignored)
        return SeriesPoint(**{k: row.get(k) for k in _POINT_FIELDS if k in row or k != "step"})


def _point_dict(point: SeriesPoint) -> dict[str, Any]:
    data = dict(zip(_POINT_FIELDS, _POINT_VALUES(point)))
    if data["step"] is None:
        del data["step"]
    return data


def write_results(result: RunResult, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    with collector_paused():
        if len(result.series) <= LONG_SERIES:  # indented for people
            tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))
        else:  # a long run's results, compact: msgspec writes a day's 86,400 rows 8x faster than json
            data = replace(result, series=[]).to_dict()
            data["series"] = _series_json(result.series)  # in its place among the keys
            tmp.write_bytes(dumps_compact(data))
    tmp.replace(path)
    return path


_UNSET = object()  # a key the document does not hold (results.json: the record's default)


def _series_json(series: list[SeriesPoint]) -> Any:
    """The rows as :func:`_point_dict` writes them, encoded by msgspec from the records themselves (a day's rows in
    half the time of dicts first). Only a row's last key can be ``"step":null``: a quote inside a string is escaped."""
    import msgspec

    return msgspec.Raw(msgspec.json.encode(series, enc_hook=str).replace(b',"step":null}', b"}"))


def read_results(path: Path) -> RunResult:
    data = Path(path).read_bytes()
    with collector_paused():
        try:  # the series straight into its records: a day's 86,400 rows in half the time of dicts, then records
            document = _results_decoder().decode(data)
        except ValueError:  # msgspec's errors are ValueErrors: a row it will not type (a field missing), NaN
            return RunResult.from_dict(loads(data))
        fields = {name: getattr(document, name) for name in document.__struct_fields__}
        series = fields.pop("series")
        result = RunResult.from_dict({k: v for k, v in fields.items() if v is not _UNSET})
        result.series = series
        return result


@cache
def _results_decoder() -> Any:
    """results.json as its top-level keys, ``series`` typed as :class:`SeriesPoint` rows (the rest as JSON gives it)."""
    import msgspec

    keys = [(f.name, Any, _UNSET) for f in dataclasses.fields(RunResult) if f.name != "series"]
    return msgspec.json.Decoder(msgspec.defstruct("ResultsFile", [*keys, ("series", list[SeriesPoint], [])]))


def loads(data: str | bytes, *, keys: tuple[str, ...] | None = None) -> Any:
    """JSON from text or bytes: msgspec's decoder (twice json's speed on a day's files), json's for what it refuses
    (``NaN``, which json writes and msgspec does not read).

    :param keys: of a JSON object, only these top-level keys (those it holds): the rest is read past, never
        built (the analyse step wants 3 of the master's output keys, not its 87,000-second series: half the time).
    """
    import msgspec

    with collector_paused():
        try:
            if keys is None:
                return msgspec.json.decode(data)
            document = _keys_decoder(keys).decode(data)
            return {key: value for key in keys if (value := getattr(document, key)) is not _UNSET}
        except msgspec.DecodeError:
            whole = json.loads(data)
            return whole if keys is None else {key: whole[key] for key in keys if key in whole}


@cache
def _keys_decoder(keys: tuple[str, ...]) -> Any:
    import msgspec

    return msgspec.json.Decoder(msgspec.defstruct("Keys", [(key, Any, _UNSET) for key in keys]))


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector off while a day's documents are built, flattened or held.

    A day's files are about a million dicts, lists and records, built in one go and
    holding no cycle: each collection the allocations trigger scans all of them again
    for nothing. Reading and writing them pause it (the analyse step of the bench's day
    had 7 full collections, 0.3 s of its 1.3 s of CPU). So do the steps that hold a day
    while they import and run big libraries (as a decorator: ``@collector_paused()``):
    the Great Expectations import in validate builds some 10^5 objects and triggered 5
    full collections of the day held, 0.2–0.6 s; matplotlib in report 0.1 s. The few
    thousand cycles those libraries leave (figures, GX's contexts) are collected once
    the step is done.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def dumps_compact(data: Any) -> bytes:
    """Compact JSON bytes; what JSON has no type for becomes its ``str`` (as ``json.dumps(default=str)``),
    a non-finite float ``null``."""
    import msgspec

    return msgspec.json.encode(data, enc_hook=str)
