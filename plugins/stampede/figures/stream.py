"""The figure stream: the Locust master's checkpoints as the run goes, and the results rebuilt from them.

A master that only writes ``locust_output.json`` when it quits loses the whole
run to a crash, an out-of-memory kill or a SIGKILL. So every few seconds
(``checkpoint_interval_s``, at most :data:`MAX_INTERVAL_S`) it appends one
*checkpoint* to the run's stream: one JSON line with everything it merged since
the previous one (each folded second's histograms per endpoint with the stage
part it counts for, the series rows of the seconds it finalized, the timeline's
new tags, new breaches) and a snapshot of what is small (the stages' boundaries,
the stop, created counts, iteration counts, the rolling windows' worst values).
Each line is written, flushed and ``fsync``-ed before the master drops the
per-second detail it holds: a crash loses at most the last interval.

The stream lives in ``stream/`` of the run folder as numbered segments
(:func:`stampede.core.paths.stream_segment`): a new one every
:data:`SEGMENT_CHECKPOINTS` checkpoints and for every master process, so an
object store (which cannot append) gets small files, and a line torn by a
crash is only ever the last line of a segment. Readers skip a line that does
not parse and count it.

:func:`rebuild_output` turns the checkpoints back into the master's own output
(the same keys as ``locust_output.json``), so validation and analysis run on it
unchanged; the stage figures come out exactly equal to the master's (the
histograms add up exactly; percentiles are computed from the merged counts).
Never imports Locust or Airflow: the master writes with it, the steps read.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from stampede.core.histogram import LatencyHistogram
from stampede.core.paths import STREAM_SEGMENT_PREFIX, STREAM_SEGMENT_SUFFIX
from stampede.core.stops import StopKind

logger = logging.getLogger("stampede")

FORMAT = 1
DEFAULT_INTERVAL_S = 5.0
MAX_INTERVAL_S = 10.0  # the most a crash may lose
UNFINISHED_KEEP = 120  # seconds merged whose series row is still due: the master finalizes them within ~20 s
SEGMENT_CHECKPOINTS = 60  # a segment holds 5 minutes at the default interval: small puts to an object store
FIGURES_SOURCE_MASTER = "master"
FIGURES_SOURCE_STREAM = "stream"


def interval_of(plan: Mapping[str, Any]) -> float:
    """Seconds between checkpoints: the plan's, else ``$STAMPEDE_CHECKPOINT_S``, else 5; kept within 1–10 s."""
    raw = plan.get("checkpoint_interval_s") or os.environ.get("STAMPEDE_CHECKPOINT_S") or DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except (TypeError, ValueError):
        value = DEFAULT_INTERVAL_S
    return min(MAX_INTERVAL_S, max(1.0, value))


# -- writing (in the master) ------------------------------------------------------------------------------
class StreamWriter:
    """Appends checkpoints to numbered segments in ``folder``; each append is flushed and synced.

    A process never appends to a segment it did not open (a dead master's last line may be torn),
    and after a failed write it starts a new segment, so a torn line stays at a segment's end.
    """

    def __init__(self, folder: str | Path, *, segment_checkpoints: int = SEGMENT_CHECKPOINTS) -> None:
        self.folder = Path(folder)
        self.segment_checkpoints = segment_checkpoints
        self.number = max((n for n, _ in segments(self.folder)), default=0)
        self.written: list[Path] = []  # this process's segments, in order
        self.lines = 0
        self._handle = None

    def append(self, record: Mapping[str, Any]) -> bool:
        """Write one checkpoint durably; ``False`` (logged) when the disk refused it: the caller keeps its data."""
        line = json.dumps(record, separators=(",", ":"), default=_plain).encode() + b"\n"
        try:
            if self._handle is None or self.lines >= self.segment_checkpoints:
                self._next_segment()
            self._handle.write(line)
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            logger.error("stampede: the figure stream %s cannot be written (%s): kept in memory for the next checkpoint",
                         self.folder, exc)
            self.close()  # the segment may end in a torn line now: never append after it
            return False
        self.lines += 1
        return True

    def _next_segment(self) -> None:
        self.close()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.number += 1
        path = self.folder / f"{STREAM_SEGMENT_PREFIX}{self.number:06d}{STREAM_SEGMENT_SUFFIX}"
        self._handle = open(path, "ab")  # noqa: SIM115 - kept open for the segment
        self.written.append(path)
        self.lines = 0
        try:  # the new file's name durable too, not only its contents
            directory = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError:
            pass

    def close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass
            self._handle = None


def _plain(value: Any) -> Any:
    if isinstance(value, LatencyHistogram):
        return value.to_dict()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON: {type(value).__name__}")


# -- reading ------------------------------------------------------------------------------------------------
def segments(folder: str | Path) -> list[tuple[int, Path]]:
    """The stream's segments in ``folder``, in order (none when it does not exist)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        name = path.name
        if name.startswith(STREAM_SEGMENT_PREFIX) and name.endswith(STREAM_SEGMENT_SUFFIX):
            try:
                found.append((int(name[len(STREAM_SEGMENT_PREFIX):-len(STREAM_SEGMENT_SUFFIX)]), path))
            except ValueError:
                continue
    return sorted(found)


class StreamReader:
    """The checkpoints of ``paths``, in order, one segment in memory at a time (a day's stream is large).

    Iterate it once; :attr:`torn` then counts the lines that were torn or unreadable (skipped).
    """

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(paths)
        self.torn = 0

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for path in self.paths:
            try:
                data = path.read_bytes()
            except OSError:
                continue
            for line in data.split(b"\n"):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    self.torn += 1
                    continue
                if isinstance(record, dict) and record.get("format") == FORMAT:
                    yield record
                else:
                    self.torn += 1


def stream_of(folder: str | Path) -> StreamReader:
    """The stream in ``folder`` (``stream/`` of a run folder)."""
    return StreamReader(path for _, path in segments(folder))


def read_stream(folder: str | Path) -> tuple[list[dict[str, Any]], int]:
    """Every checkpoint of the stream in ``folder`` as a list, and the torn lines skipped (small streams, tests)."""
    reader = stream_of(folder)
    checkpoints = list(reader)
    return checkpoints, reader.torn


def requests_between(checkpoints: Iterable[Mapping[str, Any]], since: int, until: int) -> LatencyHistogram:
    """Every request of the whole seconds ``[since, until)``, all endpoints and masters, merged exactly.

    A second's histograms can come in more than one checkpoint (a worker's late report is a
    delta): they add up. For comparing a run's latency with another clock over the same seconds
    (the bench's target measures its own service time per second).
    """
    merged = LatencyHistogram()
    for checkpoint in checkpoints:
        for sec, _key, endpoints in checkpoint.get("seconds", []):
            if since <= int(sec) < until:
                for counts, _failures, _errors in endpoints.values():
                    merged.merge(counts)
    return merged


# -- the rules the master and the rebuild share ----------------------------------------------------------------
Timeline = Mapping[int, tuple[int, str, int]]  # second -> (stage index, phase, users)


def phase_at(timeline: Timeline, sec: int) -> tuple[int | None, str]:
    """The stage and phase that requests completed in ``sec`` count for.

    A second no tick tagged takes the latest stage before it, also after the load ended,
    when requests in flight finish during the graceful stop (see stampede.load.final_reports).
    """
    entry = timeline.get(sec)
    if entry is None:
        earlier = [s for s in timeline if s <= sec]
        if not earlier:
            return None, "ramp"  # before the first stage started: not part of any stage
        entry = timeline[max(earlier)]
    return entry[0], entry[1]


def phase_durations(phase_seconds: Mapping[str, int], stages: list[Mapping[str, Any]], timeline: Timeline,
                    load_ended: float | None, now: float) -> dict[str, float]:
    """Seconds per stage/phase: whole tagged seconds, but the run's first and last second only
    as far as load ran in them (a 6 s stage that starts at x.9 and stops at x+6.9 has 6 s, not 7)."""
    durations = {key: float(n) for key, n in phase_seconds.items()}

    def only_the_part_played(at: float, index: int, part: float) -> None:
        tag = timeline.get(int(at))
        if tag is not None and tag[0] == index:
            durations[f"{tag[0]}/{tag[1]}"] -= part

    played = [(i, s) for i, s in enumerate(stages) if s.get("start") is not None]
    if played:
        first_index, first = min(played, key=lambda p: p[1]["start"])
        only_the_part_played(first["start"], first_index, first["start"] % 1.0)
    # a stage's last second counts only as far as it ran, unless the next stage ran the rest of it;
    # after a pause (a live search waits for its next step) the next stage's first second likewise
    for (index, stage), following in zip(played, [*played[1:], None]):
        end = stage.get("end")
        if end is None:  # the stage running now
            end = load_ended if load_ended is not None else now
        if following is not None and following[1]["start"] == end:
            continue
        only_the_part_played(end, index, 1.0 - end % 1.0)
        if following is not None:
            only_the_part_played(following[1]["start"], following[0], following[1]["start"] % 1.0)
    return {key: round(max(0.0, value), 3) for key, value in durations.items()}


def series_row(sec: int, stages: list[Mapping[str, Any]], timeline: Timeline, requests: int, failures: int,
               histogram: LatencyHistogram | None) -> dict[str, Any]:
    """One second of the 1-second series."""
    stage_index, phase = phase_at(timeline, sec)
    return {
        "t": sec,
        "stage": stages[stage_index]["name"] if stage_index is not None else None,
        "phase": phase if stage_index is not None else None,
        "users": timeline.get(sec, (None, None, None))[2],
        "requests": requests,
        "failures": failures,
        "p50_ms": histogram.percentile_ms(0.50) if histogram is not None else None,
        "p95_ms": histogram.percentile_ms(0.95) if histogram is not None else None,
        "p99_ms": histogram.percentile_ms(0.99) if histogram is not None else None,
    }


def fill_series(series: list[dict[str, Any]], stages: list[Mapping[str, Any]], timeline: Timeline,
                load_ended: float | None, now: float) -> list[dict[str, Any]]:
    """``series`` with one row for every second of the load, also those in which no request completed; by time."""
    starts = [s["start"] for s in stages if s.get("start") is not None]
    if not starts:
        return sorted(series, key=lambda row: row["t"])
    seen = {row["t"] for row in series}
    end = load_ended if load_ended is not None else now
    filled = list(series)
    for sec in range(int(min(starts)), int(end) + 1):
        if sec not in seen:
            filled.append(series_row(sec, stages, timeline, 0, 0, None))
    filled.sort(key=lambda row: row["t"])
    return filled


def close_stages(stages: list[dict[str, Any]], current: int | None, now: float) -> list[dict[str, Any]]:
    """The stages as the output has them: the one still running ends ``now``."""
    closed = [dict(s) for s in stages]
    if current is not None and closed[current].get("end") is None:
        closed[current]["end"] = now
    return closed


# -- rebuilding the master's output ----------------------------------------------------------------------------
def rebuild_output(checkpoints: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The run's output from its stream: each master's rebuilt (:func:`master_outputs`), merged; None without any.

    A stream holds more than one master when the owner restarted a master that died
    (``stampede.load.runner``): their figures add up exactly (:func:`merge_outputs`).
    """
    parts = master_outputs(checkpoints)
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else merge_outputs(parts)


def master_outputs(checkpoints: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One rebuilt output per master of the stream, in the order they ran (each master's lines are contiguous)."""
    outputs: list[dict[str, Any]] = []
    group: list[dict[str, Any]] = []
    for checkpoint in checkpoints:
        if group and checkpoint.get("master") != group[-1].get("master"):
            outputs.append(_rebuild_one(group))  # type: ignore[arg-type]
            group = []
        group.append(checkpoint)
    if group:
        outputs.append(_rebuild_one(group))  # type: ignore[arg-type]
    return outputs


def _rebuild_one(checkpoints: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """One master's output (``locust_output.json``'s keys) from its checkpoints, in one pass; None without any.

    Adds ``figures_source`` (``stream``) and ``figures_until`` (the last checkpoint's time): a
    master that died never wrote its stop, its last stage's end or its last interval's requests.
    The seconds it had merged but not finalized yet get their series rows from their histograms.
    """
    last: dict[str, Any] | None = None
    count = 0
    timeline: dict[int, tuple[int, str, int]] = {}
    phases: dict[str, dict[str, dict[str, Any]]] = {}
    series: list[dict[str, Any]] = []
    breaches: list[dict[str, Any]] = []
    planned: list[dict[str, Any]] = []
    unfinished: dict[int, list] = {}  # second -> [histogram, requests, failures] until its series row comes
    for checkpoint in checkpoints:
        last, count = checkpoint, count + 1
        if checkpoint.get("stages") is not None:  # sent when a boundary moved
            planned = checkpoint["stages"]
        for sec, index, phase, users in checkpoint.get("timeline", []):
            timeline[int(sec)] = (int(index), str(phase), users)
        for sec, key, endpoints in checkpoint.get("seconds", []):
            row = unfinished.setdefault(int(sec), [LatencyHistogram(), 0, 0])
            for endpoint, (counts, failures, errors) in endpoints.items():
                histogram = LatencyHistogram(counts)
                row[0].merge(histogram)
                row[1] += histogram.total
                row[2] += failures
                if key is None:  # before the first stage: part of no stage's figures
                    continue
                slot = phases.setdefault(key, {}).setdefault(
                    endpoint, {"histogram": LatencyHistogram(), "failures": 0, "errors": {}})
                slot["histogram"].merge(histogram)
                slot["failures"] += failures
                for message, n in errors.items():
                    slot["errors"][message] = slot["errors"].get(message, 0) + n
        for row in checkpoint.get("series", []):
            series.append(row)
            unfinished.pop(row["t"], None)
        breaches.extend(checkpoint.get("breaches", []))
        if len(unfinished) > UNFINISHED_KEEP:  # a late report's second, finalized long ago: not unfinished
            newest = max(unfinished)
            for sec in [s for s in unfinished if s < newest - UNFINISHED_KEEP]:
                del unfinished[sec]
    if last is None:
        return None
    final = bool(last.get("final"))
    if not final:  # the seconds merged but not finalized when the master died
        finalized = max((r["t"] for r in series), default=None)
        series += [series_row(sec, planned, timeline, requests, failures, histogram)
                   for sec, (histogram, requests, failures) in sorted(unfinished.items())
                   if finalized is None or sec > finalized]
    now = float(last.get("finished_at") or last["at"])
    stages = close_stages(planned, last.get("current_stage"), now)
    phase_seconds: dict[str, int] = {}
    for index, phase, _ in timeline.values():
        phase_seconds[f"{index}/{phase}"] = phase_seconds.get(f"{index}/{phase}", 0) + 1
    load_ended = last.get("load_ended")
    return {
        "started_at": last["started_at"],
        "finished_at": now,
        "stages": stages,
        "series": fill_series(series, stages, timeline, load_ended, now),
        "phases": {
            key: {ep: {"histogram": s["histogram"].to_dict(), "failures": s["failures"], "errors": s["errors"]}
                  for ep, s in endpoints.items()}
            for key, endpoints in phases.items()
        },
        "phase_seconds": phase_durations(phase_seconds, stages, timeline, load_ended, now),
        "load_ended": load_ended,
        "iterations": last.get("iterations") or {},
        "created": last.get("created") or {},
        "stopped": last.get("stopped"),
        "breaches": breaches,
        "windows": last.get("windows") or {},
        "worker_count": last.get("worker_count", 0),
        "figures_source": FIGURES_SOURCE_STREAM,
        "figures_until": float(last["at"]),
        "checkpoints": count,
        "final_checkpoint": final,
        "master": last.get("master"),
    }


def merge_outputs(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The outputs of the masters that played one run in turn (a restart), as one output, merged exactly.

    Histograms, failures, errors, seconds and counts add up (percentiles come from the merged
    counts, never averaged); a stage split across a restart starts with its first master and
    ends with its last (the new master's re-spawn counts as the stage's ramp, not its steady
    part); the series are the masters' seconds side by side (a second both hold, from a worker's
    late report, adds its counts; its percentiles are the fuller row's). The seconds between a
    dead master's last checkpoint and its successor's first are in no figure: ``restarts`` of
    the output says when and how long. A rolling window never spans a restart: per threshold,
    the worst window is the master's that judged most seconds of it. Intervals (hourly bins of
    long stages) are the last master's: a rebuild reads none (the stream carries the finished ones only).
    """
    merged = dict(parts[-1])
    merged["started_at"] = parts[0]["started_at"]
    merged["stages"] = _merge_stages([p["stages"] for p in parts])
    phases: dict[str, dict[str, dict[str, Any]]] = {}
    for part in parts:
        for key, endpoints in (part.get("phases") or {}).items():
            for endpoint, figures in endpoints.items():
                slot = phases.setdefault(key, {}).setdefault(
                    endpoint, {"histogram": LatencyHistogram(), "failures": 0, "errors": {}})
                slot["histogram"].merge({int(k): v for k, v in figures["histogram"].items()})
                slot["failures"] += figures.get("failures", 0)
                for message, n in (figures.get("errors") or {}).items():
                    slot["errors"][message] = slot["errors"].get(message, 0) + n
    merged["phases"] = {key: {ep: {**s, "histogram": s["histogram"].to_dict()} for ep, s in endpoints.items()}
                        for key, endpoints in phases.items()}
    merged["phase_seconds"] = _added([p.get("phase_seconds") or {} for p in parts])
    merged["created"] = _added([p.get("created") or {} for p in parts])
    merged["iterations"] = _added([p.get("iterations") or {} for p in parts])
    merged["breaches"] = [b for p in parts for b in p.get("breaches") or []]
    merged["series"] = _merge_series([p.get("series") or [] for p in parts])
    merged["windows"] = _merge_windows([p.get("windows") or {} for p in parts])
    merged["checkpoints"] = sum(int(p.get("checkpoints") or 0) for p in parts)
    merged["masters"] = len(parts)
    return merged


def _merge_stages(played: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    stages = [dict(s) for s in played[-1]]
    for index, stage in enumerate(stages):
        starts = [p[index]["start"] for p in played if index < len(p) and p[index].get("start") is not None]
        ends = [p[index]["end"] for p in played if index < len(p) and p[index].get("end") is not None]
        steady = [p[index]["steady_from"] for p in played if index < len(p) and p[index].get("steady_from") is not None]
        stage["start"] = min(starts) if starts else None
        stage["end"] = max(ends) if ends else None
        stage["steady_from"] = min(steady) if steady else None
        for p in played:  # the loop lag of the master that played the stage last
            if index < len(p) and p[index].get("start") is not None:
                stage.update({k: v for k, v in p[index].items() if k.startswith("loop_lag")})
    return stages


def _added(dicts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Numbers (and lists of numbers, element by element) of the same key, added."""
    total: dict[str, Any] = {}
    for d in dicts:
        for key, value in d.items():
            if key not in total:
                total[key] = list(value) if isinstance(value, list) else value
            elif isinstance(value, list):
                total[key] = [a + b for a, b in zip(total[key], value)]
            else:
                total[key] = total[key] + value
    return total


def _merge_series(series: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for part in series:
        for row in part:
            seen = rows.get(row["t"])
            if seen is None:
                rows[row["t"]] = dict(row)
                continue
            fuller = row if row["requests"] > seen["requests"] else seen
            rows[row["t"]] = {**fuller, "requests": seen["requests"] + row["requests"],
                              "failures": seen["failures"] + row["failures"]}
    return [rows[t] for t in sorted(rows)]


def _merge_windows(windows: list[Mapping[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for part in windows:
        for stage, rules in part.items():
            for rule, entry in rules.items():
                seen = merged.setdefault(stage, {}).get(rule)
                if seen is None or sum((entry.get("seconds") or {}).values()) > sum((seen.get("seconds") or {}).values()):
                    merged[stage][rule] = entry
    return merged


def mark_master_died(output: dict[str, Any], exit_code: int | None) -> dict[str, Any]:
    """A rebuilt output of a master that died: the run stops there (``master_died``) unless it had stopped already.

    A stop the master recorded before it died (an abort, the kill switch) stays the run's stop;
    ``figures_source`` says either way that the figures are the stream's.
    """
    until = float(output.get("figures_until") or output.get("finished_at") or 0.0)
    code = "unknown" if exit_code is None else exit_code
    output["figures_note"] = f"built from the stream up to {clock(until)}; the master died (exit code {code})"
    if not output.get("stopped"):
        output["stopped"] = {"reason": f"the Locust master died (exit code {code}); the figures are built from "
                                       f"its stream up to {clock(until)}",
                             "kind": str(StopKind.MASTER_DIED), "at": until}
    return output


def mark_in_progress(output: dict[str, Any]) -> dict[str, Any]:
    """A rebuilt output of a run that is still going (a progress report)."""
    until = float(output.get("figures_until") or output.get("finished_at") or 0.0)
    output["figures_note"] = f"in progress: built from the stream up to {clock(until)}"
    return output


def clock(epoch: float) -> str:
    """``HH:MM:SS UTC`` of a checkpoint."""
    return time.strftime("%H:%M:%S UTC", time.gmtime(epoch))
