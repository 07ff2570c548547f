"""One threshold rule, used alike by the mid-run abort, the validation and the breaking-point search.

A threshold says ``<statistic> of <which requests> <op> <limit>`` must hold, strictly, as the seed
words its thresholds ("p95 < 200 ms", "errors < 1 %", "> 100 req/s"): a value equal to its limit
breaks it. Like k6's ``Threshold`` type, one rule decides both whether the load stops early and
the stage's verdict after the run:

- mid-run, the Locust master (``stampede.load.threshold_watch``) computes :meth:`Threshold.value_of`
  on the exactly merged histograms of the last window of complete seconds and asks
  :meth:`Threshold.breached`;
- after the run, ``stampede.figures`` computes the same :meth:`Threshold.value_of` on the stage's
  steady part (or the worst rolling window), and Great Expectations judges those values against
  the same limits (``stampede.analysis.expectations``).

What a threshold can say (``docs/scenarios.md`` has the scenario syntax):

- any latency percentile (``p50``, ``p90``, ``p99.9``...), ``max``, ``mean`` (ms), ``error_rate``
  (a fraction), ``rps``, ``requests``, and in the open model ``dropped_iterations`` and
  ``dropped_rate`` (dropped ÷ due);
- of the stage's requests, one endpoint (``"GET /listings"``), a group of endpoints merged into
  one distribution, or every endpoint whose name matches a pattern (merged, or ``each`` alone);
- of a server-side series the pipeline samples (``server: db_pool_waiting``): ``max``, ``mean``,
  ``min``, ``last`` or a percentile of its samples;
- over the whole judged part, or over every rolling window of ``window_s`` seconds ("p95 above
  800 ms for 30 s" is ``{stat: p95, below: 800, window_s: 30}``): the worst window decides.

A value that could not be measured (no requests for that endpoint, no server samples) is
``None``: it never holds and is never a breach. The caller reports it as *not judged*, which
fails the run unless the threshold is ``optional``.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from stampede.core.histogram import LatencyHistogram

# the scenario's legacy keys -> (statistic, operator)
LEGACY: dict[str, tuple[str, str]] = {
    "p95_ms": ("p95", "<"),
    "p99_ms": ("p99", "<"),
    "error_rate": ("error_rate", "<"),
    "min_rps": ("rps", ">"),
}
KEYS = tuple(LEGACY)

PERCENTILE = re.compile(r"p(\d{1,3}(?:\.\d{1,3})?)")
REQUEST_STATS = ("max", "mean", "error_rate", "rps", "requests", "dropped_iterations", "dropped_rate")
SERVER_STATS = ("max", "mean", "min", "last")
FRACTIONS = frozenset({"error_rate", "dropped_rate"})  # limits from 0 to 1
STAGE_ONLY = frozenset({"dropped_iterations", "dropped_rate"})  # the open model's counts are not per endpoint
NEVER_MID_RUN = frozenset({"rps", "requests"})  # the newest seconds are incomplete; a low rate harms no one
ABORT_WINDOW_S = 10  # an abort threshold without a window of its own is judged over the last 10 s
COMPLETE_AFTER_S = 3  # a second is judged mid-run once every worker has reported it (they report every 3 s)


def percentile_of(stat: str) -> float | None:
    """``p99.9`` -> 0.999; ``None`` for a statistic that is no percentile (or out of range)."""
    match = PERCENTILE.fullmatch(stat)
    if not match:
        return None
    value = float(match.group(1))
    return round(value / 100, 6) if 0 < value <= 100 else None


def is_latency(stat: str) -> bool:
    return stat in ("max", "mean") or percentile_of(stat) is not None


def known_stat(stat: str, *, server: bool) -> bool:
    return percentile_of(stat) is not None or stat in (SERVER_STATS if server else REQUEST_STATS)


# -- what a threshold is judged on --------------------------------------------------------------------------
@dataclass
class Measured:
    """Requests a threshold is judged on: a stage's steady part, one window, one endpoint or a group.

    :param histogram: their latencies, merged exactly across workers and endpoints.
    :param duration_s: the seconds they came from (for ``rps``).
    :param iterations: open model: iterations started in those seconds (``None``: closed model).
    """

    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    failures: int = 0
    duration_s: float = 0.0
    iterations: int | None = None
    dropped: int | None = None

    @property
    def requests(self) -> int:
        return self.histogram.total

    def add(self, counts: LatencyHistogram | Mapping[int, int], failures: int) -> Measured:
        self.histogram.merge(counts)
        self.failures += failures
        return self


@dataclass(frozen=True)
class Samples:
    """Values of one server-side series a threshold is judged on (the samples inside a stage or a window)."""

    values: tuple[float, ...]


class Figures(Protocol):
    """A record with figures as attributes (a breaking-point step): judged by the legacy keys."""

    requests: int
    rps: float
    p95_ms: float | None
    p99_ms: float | None
    error_rate: float


def request_stat(stat: str, measured: Measured) -> float | None:
    """One statistic of a set of requests: the figures of stages and endpoints come from here too.

    Rates are rounded as results.json shows them (rps to 3 digits, fractions to 6), so the value a
    threshold is judged on is the value the report prints.
    """
    requests = measured.requests
    if stat == "requests":
        return float(requests)
    if stat == "rps":
        return round(requests / measured.duration_s, 3) if measured.duration_s > 0 else None
    if stat in STAGE_ONLY:
        if measured.dropped is None:
            return None
        if stat == "dropped_iterations":
            return float(measured.dropped)
        due = (measured.iterations or 0) + measured.dropped
        return round(measured.dropped / due, 6) if due else None
    if requests == 0:
        return None
    if stat == "error_rate":
        return round(measured.failures / requests, 6)
    if stat == "max":
        return measured.histogram.max_ms()
    if stat == "mean":
        mean = measured.histogram.mean_ms()
        return None if mean is None else round(mean, 3)
    fraction = percentile_of(stat)
    if fraction is None:
        raise ValueError(f"threshold: unknown statistic {stat!r}")
    return measured.histogram.percentile_ms(fraction)


def sample_stat(stat: str, values: Sequence[float]) -> float | None:
    """One statistic of a server series' samples (nearest-rank percentiles)."""
    if not values:
        return None
    if stat == "max":
        return max(values)
    if stat == "min":
        return min(values)
    if stat == "mean":
        return round(sum(values) / len(values), 4)
    if stat == "last":
        return values[-1]
    fraction = percentile_of(stat)
    if fraction is None:
        raise ValueError(f"threshold: unknown server statistic {stat!r}")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# -- which requests -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Endpoints:
    """Which endpoints a threshold judges, by the names results.json gives them (``"GET /listings"``).

    :param names: one endpoint, or a group judged as one merged distribution (Gatling's groups).
    :param pattern: a regular expression every judged name must match in full (``"GET /escrows.*"``).
    :param each: judge every named or matching endpoint on its own instead of merged.
    """

    names: tuple[str, ...] = ()
    pattern: str | None = None
    each: bool = False

    def matches(self, name: str) -> bool:
        if self.pattern is not None:
            return re.fullmatch(self.pattern, name) is not None
        return name in self.names

    @property
    def label(self) -> str:
        if self.pattern is not None:
            return f"~{self.pattern}"
        return " + ".join(self.names)

    def subjects(self, seen: Iterable[str], *, label: str | None = None) -> list[tuple[str, tuple[str, ...]]]:
        """``(subject, endpoints)`` to judge, given the endpoints that had requests.

        Named endpoints are judged whether or not they had requests (one that had none is not
        judged, never skipped); a pattern is judged on the names it matched, and on nothing
        (not judged) when it matched none.
        """
        members = tuple(sorted(n for n in seen if self.matches(n))) if self.pattern is not None else self.names
        if self.each:
            return [(name, (name,)) for name in members] or [(self.label, ())]
        return [(self.merged_label(label), members)]

    def merged_label(self, name: str | None) -> str:
        """The subject of the merged endpoints: one endpoint is itself; a group or a pattern is the
        threshold's ``name`` when it has one."""
        if self.pattern is None and len(self.names) == 1:
            return self.names[0]
        return name or self.label

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Endpoints:
        return cls(names=tuple(data.get("names") or ()), pattern=data.get("pattern"), each=bool(data.get("each")))


# -- the rule -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Threshold:
    """``stat(requests) op limit`` must hold (strict).

    :param stat: ``p95``, ``p99.9``, ``max``, ``mean``, ``error_rate``, ``rps``, ``requests``,
        ``dropped_iterations``, ``dropped_rate``; for a server series ``max``, ``mean``, ``min``,
        ``last`` or a percentile of its samples.
    :param op: ``<`` (``below`` in a scenario) or ``>`` (``above``).
    :param endpoints: which endpoints; ``None``: all the stage's requests.
    :param server: the name of a server-side series (``db_pool_waiting``) instead of requests.
    :param stages: the scenario's stage names it applies to; empty: every judged stage.
    :param abort: stop the load when it breaks mid-run (``None``: the scenario's ``abort_on_breach``).
    :param delay_s: judged mid-run only this long into a stage's steady part (``None``: twice the window).
    :param window_s: judged over every rolling window of this many seconds (the worst decides).
    :param abort_window_s: the window of a mid-run judgement without ``window_s`` (the scenario's
        ``abort.window_s``; set by the plan).
    :param optional: when it cannot be judged (no requests, no samples), it does not fail the run.
    :param name: a label for reports and JUnit; default: derived from the rest.
    :param key: the scenario's legacy key it came from (``p95_ms``), if any.
    """

    stat: str
    op: str
    limit: float
    endpoints: Endpoints | None = None
    server: str | None = None
    stages: tuple[str, ...] = ()
    abort: bool | None = None
    delay_s: int | None = None
    window_s: int | None = None
    abort_window_s: int | None = None
    optional: bool = False
    name: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if self.op not in ("<", ">"):
            raise ValueError(f"threshold {self.stat}: op must be < or > (got {self.op!r})")
        if not known_stat(self.stat, server=self.server is not None):
            raise ValueError(f"threshold: unknown statistic {self.stat!r}")

    @classmethod
    def legacy(cls, key: str, limit: float) -> Threshold:
        """A scenario's ``thresholds: {p95_ms: 200}`` entry."""
        if key not in LEGACY:
            raise ValueError(f"thresholds.{key}: unknown threshold; fix: use one of {', '.join(KEYS)}")
        stat, op = LEGACY[key]
        return cls(stat=stat, op=op, limit=float(limit), key=key)

    # -- what it is ------------------------------------------------------------------------------------------
    @property
    def metric(self) -> str:
        """The figure's name, unit included: ``p95_ms``, ``p99.9_ms``, ``error_rate``, ``db_pool_waiting.max``;
        the legacy key where there is one (``min_rps``)."""
        if self.key:
            return self.key
        if self.server:
            return f"{self.server}.{self.stat}"
        return f"{self.stat}_ms" if is_latency(self.stat) else self.stat

    @property
    def attribute(self) -> str:
        """The attribute of a figures record that holds this statistic (``p95_ms``, ``rps``)."""
        return f"{self.stat}_ms" if is_latency(self.stat) else self.stat

    @property
    def column(self) -> str:
        """A name for this threshold's figure that is safe as a column (GX): no dots, window included."""
        base = f"server_{self.server}_{self.stat}" if self.server else self.attribute
        base = re.sub(r"[^A-Za-z0-9_]", "_", base)
        return f"{base}_worst_{self.window_s}s" if self.window_s else base

    @property
    def source(self) -> str:
        return "server" if self.server else "client"

    @property
    def unit(self) -> str:
        if self.server:
            return ""
        if is_latency(self.stat):
            return "ms"
        return {"rps": "req/s", "error_rate": "", "dropped_rate": "", "requests": "", "dropped_iterations": ""}[self.stat]

    @property
    def judged_mid_run(self) -> bool:
        """Whether the mid-run abort may judge it. A low request rate harms no one and follows from
        users × think time, and the freshest seconds are still incomplete, so ``rps`` and
        ``requests`` are judged after the run only."""
        return self.stat not in NEVER_MID_RUN or self.server is not None

    @property
    def aborts(self) -> bool:
        return bool(self.abort) and self.judged_mid_run

    @property
    def mid_run_window_s(self) -> int:
        return int(self.window_s or self.abort_window_s or ABORT_WINDOW_S)

    @property
    def judged_from_s(self) -> int:
        """Seconds into a stage's steady part before the abort judges it: ``delay_s`` (default twice
        the window), never less than the window and the seconds until its seconds are complete, so
        the first window judged lies in the steady part."""
        window = self.mid_run_window_s
        delay = 2 * window if self.delay_s is None else int(self.delay_s)
        return max(delay, window + COMPLETE_AFTER_S)

    @property
    def is_throughput_floor(self) -> bool:
        """``min_rps`` (or ``rps`` ``above`` without named stages): judged only at a scenario's peak users
        and only on a steady part; the seed's "> 100 req/s" is a figure for 1,000 users, not for the
        100-user warm-up, nor for a ramp that is still climbing."""
        return self.stat == "rps" and self.op == ">" and not self.stages and self.server is None

    @property
    def legacy_key(self) -> str | None:
        """The legacy key this threshold is equivalent to (a stage-wide p95/p99/error/throughput bound)."""
        if self.key:
            return self.key
        if self.endpoints or self.server or self.window_s or self.stages:
            return None
        return next((k for k, (stat, op) in LEGACY.items() if (stat, op) == (self.stat, self.op)), None)

    def applies_to(self, stage: str) -> bool:
        return not self.stages or stage in self.stages

    def label(self, subject: str | None = None) -> str:
        """``GET /listings p95 < 200 ms over 30 s windows``: the threshold for people (and JUnit)."""
        if self.name:
            return self.name if not subject or self.endpoints is None or not self.endpoints.each else f"{self.name} {subject}"
        what = f"server {self.server} {self.stat}" if self.server else self.stat
        unit = f" {self.unit}" if self.unit else ""
        limit = str(int(self.limit)) if self.limit.is_integer() else f"{self.limit:.10g}"
        text = f"{what} {self.op} {limit}{unit}"
        if subject:
            text = f"{subject} {text}"
        if self.window_s:
            text += f" over {self.window_s} s windows"
        return text

    # -- the judgement ---------------------------------------------------------------------------------------
    def holds(self, value: float | None) -> bool:
        """``value op limit``; a missing value does not hold (nothing was measured)."""
        if value is None:
            return False
        return value < self.limit if self.op == "<" else value > self.limit

    def breached(self, value: float | None) -> bool:
        """A measured value that does not hold (a missing value is not a breach: see :meth:`holds`)."""
        return value is not None and not self.holds(value)

    def worse(self, value: float, than: float) -> bool:
        """Whether ``value`` is further from holding than ``than`` (the worst window decides)."""
        return value > than if self.op == "<" else value < than

    def value_of(self, data: Measured | Samples | Figures) -> float | None:
        if isinstance(data, Samples):
            return sample_stat(self.stat, data.values)
        if isinstance(data, Measured):
            return request_stat(self.stat, data)
        return getattr(data, self.attribute)

    # -- transport -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | Threshold) -> Threshold:
        if isinstance(data, Threshold):
            return data
        values = dict(data)
        endpoints = values.get("endpoints")
        values["endpoints"] = Endpoints.from_dict(endpoints) if isinstance(endpoints, Mapping) else endpoints
        values["stages"] = tuple(values.get("stages") or ())
        values["limit"] = float(values["limit"])
        names = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in values.items() if k in names})

    def with_defaults(self, *, abort: bool, delay_s: int | None, abort_window_s: int | None) -> Threshold:
        """This threshold with the scenario's abort settings where it has none of its own."""
        return replace(
            self,
            abort=abort if self.abort is None else self.abort,
            delay_s=delay_s if self.delay_s is None else self.delay_s,
            abort_window_s=abort_window_s if self.abort_window_s is None else self.abort_window_s,
        )


@dataclass
class Observation:
    """What one threshold measured on one stage (and one subject), ready for the judge.

    :param index: the threshold's place in the stage's table.
    :param subject: the endpoint, group or pattern judged (``None``: the stage's requests; a series name).
    :param value: the measured value (the worst window's, for a windowed threshold); ``None``: not judged.
    :param reason: why it could not be judged (empty when it was).
    :param at: the epoch second the worst window ended (windowed thresholds).
    """

    stage: str
    index: int
    threshold: Threshold
    subject: str | None
    value: float | None
    reason: str = ""
    at: float | None = None
    endpoints: tuple[str, ...] = ()

    @property
    def judged(self) -> bool:
        return self.value is not None


# -- rolling windows ----------------------------------------------------------------------------------------
class RollingWindow:
    """The last ``window_s`` seconds of one subject's requests, slid one second at a time (exact).

    Adding the newest second and subtracting the oldest keeps a 24-hour run's windows cheap: one
    merge and one subtraction per second instead of ``window_s`` merges.

    :param start: the first second of the part the windows lie in; a window is full once it spans
        ``window_s`` seconds of that part.
    """

    def __init__(self, window_s: int, start: int) -> None:
        self.window_s = window_s
        self.start = start
        self.held: deque[tuple[int, LatencyHistogram, int, int | None, int | None]] = deque()
        self.total = Measured(duration_s=float(window_s))
        self.newest: int | None = None

    def push(self, second: int, histogram: LatencyHistogram | None, failures: int = 0,
             iterations: int | None = None, dropped: int | None = None) -> None:
        """Slide to ``second`` (later than the last one pushed) with that second's requests."""
        self.newest = second
        if histogram is not None or iterations is not None:
            copy = LatencyHistogram(histogram.counts) if histogram is not None else LatencyHistogram()
            self.held.append((second, copy, failures, iterations, dropped))
            self.total.add(copy, failures)
            if iterations is not None:
                self.total.iterations = (self.total.iterations or 0) + iterations
                self.total.dropped = (self.total.dropped or 0) + (dropped or 0)
        while self.held and self.held[0][0] <= second - self.window_s:
            _, old, old_failures, old_iterations, old_dropped = self.held.popleft()
            self.total.histogram.subtract(old)
            self.total.failures -= old_failures
            if old_iterations is not None:
                self.total.iterations = (self.total.iterations or 0) - old_iterations
                self.total.dropped = (self.total.dropped or 0) - (old_dropped or 0)

    @property
    def full(self) -> bool:
        return self.newest is not None and self.newest - self.start + 1 >= self.window_s

    def measured(self) -> Measured | None:
        return self.total if self.full else None


@dataclass
class Worst:
    """The worst window of one threshold and subject so far."""

    value: float | None = None
    at: int | None = None
    windows: int = 0  # windows with a measured value

    def offer(self, threshold: Threshold, value: float | None, at: int) -> None:
        if value is None:
            return
        self.windows += 1
        if self.value is None or threshold.worse(value, self.value):
            self.value, self.at = value, at

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "at": self.at, "windows": self.windows}


def sample_windows(points: Sequence[Sequence[float]], start: float, end: float, window_s: float
                   ) -> Iterator[tuple[float, Samples]]:
    """Every window of ``window_s`` seconds over a server series' ``[t, value]`` points in ``[start, end]``,
    one ending at each sample: the samples in ``(t - window_s, t]``."""
    inside = [(t, v) for t, v in points if start <= t <= end]
    left = 0
    for index, (t, _) in enumerate(inside):
        while inside[left][0] <= t - window_s:
            left += 1
        if t - window_s >= start - 1e-9:
            yield t, Samples(tuple(v for _, v in inside[left: index + 1]))


# -- the legacy table ---------------------------------------------------------------------------------------
def table(thresholds: Mapping[str, float]) -> list[Threshold]:
    """A scenario's (or a planned stage's) ``{key: limit}`` as thresholds, in the keys' order."""
    return [Threshold.legacy(key, float(thresholds[key])) for key in KEYS if thresholds.get(key) is not None]


def breaches(thresholds: Mapping[str, float], figures: Figures) -> list[tuple[Threshold, float]]:
    """Every threshold ``figures`` break, with the value that broke it."""
    found = []
    for threshold in table(thresholds):
        value = threshold.value_of(figures)
        if threshold.breached(value):
            found.append((threshold, float(value)))  # type: ignore[arg-type]
    return found


def legacy_view(rules: Iterable[Threshold]) -> dict[str, float]:
    """``{p95_ms: 200, ...}`` for the thresholds that have a legacy equivalent (charts, the search)."""
    view: dict[str, float] = {}
    for rule in rules:
        key = rule.legacy_key
        if key and key not in view:
            view[key] = rule.limit
    return {key: view[key] for key in KEYS if key in view}


# -- drift over a long stage (stampede.analysis.drift) ------------------------------------------------------
DRIFT_MIN_STAGE_S = 20 * 60  # a shorter stage shows no drift worth the name; its requests are not binned
DRIFT_HOUR_S = 3600
DRIFT_MIN_INTERVALS = 12  # a stage shorter than 12 hours is cut into 12 intervals instead of hours


def drift_interval_s(duration_s: float) -> int:
    """The interval a long stage's requests are binned by, to see them drift: an hour for a stage of 12 h
    or more, else a twelfth of the stage in whole minutes (a 30-minute soak: 2.5 minutes, rounded to 120 s).
    0: the stage is too short to bin."""
    if duration_s < DRIFT_MIN_STAGE_S:
        return 0
    if duration_s >= DRIFT_HOUR_S * DRIFT_MIN_INTERVALS:
        return DRIFT_HOUR_S
    return max(60, int(duration_s / DRIFT_MIN_INTERVALS) // 60 * 60)
