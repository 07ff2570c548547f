"""The master's side of a run: the stage timeline, exact merges, the 1-second series, stop and abort.

Workers ship per-second, per-endpoint histograms with their reports; the
aggregator tags every second with its stage and phase (ramp or steady), folds
the histograms into one per (stage, phase, endpoint) plus a 1-second series,
prints a progress line, polls the stop file and judges the abort thresholds
(the one rule of ``stampede.core.thresholds``). Every few seconds it appends a
checkpoint of what it merged to the run's figure stream (``stampede.figures.stream``)
and drops the per-second detail it streamed: a crash loses at most that interval,
and memory stays flat over a day. Every per-second structure keeps only the recent
seconds (:data:`KEEP_TAGGED_S` at most): the series rows and the timeline's old tags are
on the stream, the open model's counts are folded into their stage and phase, and
the rolling windows keep what their longest window needs. At quit it writes
everything as JSON (the series and the timeline read back from the stream; the
stages' histograms were merged exactly as the seconds came, never dropped). Loaded
only in Locust processes (never imports Airflow).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from locust.runners import MasterRunner

from stampede.core.histogram import DenseLatencyHistogram, LatencyHistogram
from stampede.core.paths import Artifact
from stampede.core.stops import StopKind, stop_kind
from stampede.figures import stream as figure_stream
from stampede.figures.stream import FIGURES_SOURCE_MASTER, StreamWriter
from stampede.load import ledger, loop_lag, open_model
from stampede.load.recorder import LOOP_LAG_KEY
from stampede.load.final_reports import FinalReports
from stampede.load.stage_events import STAGE_END_MARK, STAGES_SO_FAR, STOP_MARK
from stampede.load.intervals import IntervalBins
from stampede.load.threshold_watch import ThresholdWatch

logger = logging.getLogger("stampede")

STAGE_START_MARK = "[stampede] stage-start"  # the supervisor health-checks the target on this line
FINALIZE_AFTER_S = 8  # workers report every 3 s; a second older than this is complete
SETTLE_MAX_S = 5  # at most this long after a spawn ends before the steady part starts
KEEP_CLOSED_S = 300  # finalized seconds kept for the abort window (bounded memory)
KEEP_TAGGED_S = 900  # the timeline's streamed tags kept in memory: a report this late counts for no stage


def settle_s(stage: dict[str, Any]) -> int:
    """Seconds after a stage's users are all spawned that still count as its ramp.

    Spawning N users sends N first requests and opens N connections within seconds;
    at 1,000 users the next seconds' p95 was 1 s against a 20 ms target. A tenth
    of the stage, at least 1 s and at most SETTLE_MAX_S, keeps that out of the
    steady part the stage is judged on.
    """
    return int(min(SETTLE_MAX_S, max(1, round(0.1 * float(stage.get("duration_s") or 0)))))


class RunAggregator:
    """Master side: stage timeline, exact merges, 1-second series, abort checks, output."""

    def __init__(self, environment, plan: dict[str, Any]) -> None:
        self.environment = environment
        self.plan = plan
        self.stages: list[dict[str, Any]] = [
            {**s, "index": i, "start": None, "end": None, "steady_from": None} for i, s in enumerate(plan["stages"])
        ]
        self.timeline: dict[int, tuple[int, str, int]] = {}  # second -> (stage index, phase, users)
        self.tags: dict[tuple[int, str, int], tuple[int, str, int]] = {}  # the timeline's values, shared
        self.pending: dict[int, list[dict[str, list]]] = defaultdict(list)
        self.open_seconds: dict[int, list] = {}  # second -> [histogram, requests, failures]
        self.closed_seconds: dict[int, list] = {}  # finalized seconds, kept KEEP_CLOSED_S for the abort window
        self.series: list[dict[str, Any]] = []
        self.phases: dict[str, dict[str, dict[str, Any]]] = {}
        self.phase_seconds: dict[str, int] = defaultdict(int)  # whole seconds tagged per stage/phase
        self.intervals = IntervalBins(self.stages)  # long stages, an hour at a time: what only time shows
        self.created: dict[str, int] = defaultdict(int)
        self.workers_cpu: dict[str, float] = {}
        self.stop_reason: dict[str, Any] | None = None
        self.breaches: list[dict[str, Any]] = []
        self.started_at = time.time()
        self.current_stage: int | None = None
        self.iterations = open_model.IterationCounts()  # open model: started / dropped per second
        self.load_ended: float | None = None  # when the shape ended the load (its last stage's end)
        self.final_reports: FinalReports | None = None  # the master's; a standalone process records in-process
        self.last_progress = 0.0
        self.watch = ThresholdWatch(self, final_after_s=FINALIZE_AFTER_S)  # thresholds mid-run, rolling windows
        self.announced: set[int] = set()  # stages whose end was announced (their figures complete)
        self.pending_lag: dict[int, list[dict]] = defaultdict(list)  # second -> the generators' loop-lag histograms
        self.loop_lag: dict[str, LatencyHistogram] = {}  # "stage/phase" -> event-loop lag of every generator
        self.stream = _stream_writer(environment)  # None: no --stampede-out, nothing streamed (series kept in memory)
        self.checkpoint_interval_s = figure_stream.interval_of(plan)
        self.master_id = f"{os.getpid()}-{self.started_at:.3f}"
        self.checkpoints = 0
        self.last_checkpoint = 0.0
        self.unstreamed: dict[tuple[int, str | None], dict[str, list]] = {}  # (second, stage part) -> endpoint deltas
        self.timeline_streamed_upto: int | None = None  # the last tagged second streamed (re-sent: it may be retagged)
        self.timeline_first: int | None = None  # the run's first tagged second: kept (phase_durations reads it)
        self.timeline_kept_from: int | None = None  # tags of streamed seconds before it are forgotten (on the stream)
        self.breaches_streamed = 0
        self.stages_streamed: list | None = None

    # -- data in -----------------------------------------------------------
    def add_report(self, report: dict[str, Any]) -> None:
        for sec, endpoints in report.get("seconds", {}).items():
            self.pending[int(sec)].append(endpoints)
        for kind, count in report.get("created", {}).items():
            self.created[kind] += count
        self.iterations.add(report.get(open_model.REPORT_KEY), self.timeline)
        for sec, counts in (report.get(LOOP_LAG_KEY) or {}).items():
            self.pending_lag[int(sec)].append(counts)
        ledger.collect(self, report)  # created entities: appended to the run's ledger file

    # -- the master's 1-second tick ----------------------------------------
    def tick(self, now: float) -> None:
        second = int(now)
        runner = self.environment.runner
        index = self.current_stage
        if index is not None and self.load_ended is None:  # seconds after the load ended belong to no stage
            stage = self.stages[index]
            users = runner.user_count if runner else 0
            if stage["steady_from"] is None and users >= stage["users"] and runner.state != "spawning":
                # the spawn's transient (a burst of first requests and new connections) settles first
                stage["steady_from"] = second + settle_s(stage)
            phase = "steady" if stage["steady_from"] is not None and second >= stage["steady_from"] else "ramp"
            if second not in self.timeline:
                self.timeline[second] = self.tag(index, phase, users)
                self.phase_seconds[f"{index}/{phase}"] += 1
        ledger.flush(self)  # what was created is on disk within a second
        self.fold(upto=second - 1)  # the current second may still change stage (see enter_stage)
        self.finalize(before=second - FINALIZE_AFTER_S)
        self.announce_ended_stages(second)
        self.check_stop_file()
        self.check_abort(second)
        self.iterations.settle(second - self.watch.keep_s, self.timeline)  # the windows have read them
        self.print_progress(now)
        if now - self.last_checkpoint >= self.checkpoint_interval_s:
            self.checkpoint(now)
            bound_locust_stats(getattr(self.environment, "stats", None), now)

    def tag(self, index: int, phase: str, users: int) -> tuple[int, str, int]:
        """One shared tuple per (stage, phase, users): a day's timeline holds 86,400 seconds but few tags."""
        key = (index, phase, users)
        return self.tags.setdefault(key, key)

    def announce_ended_stages(self, second: int) -> None:
        """A stage whose every second is final: its figures to ``stages_so_far.json``, then a line saying so.

        The supervisor reads them on the line and posts the stage's reply while the run goes on. The last
        stage usually ends with the run; its reply comes from the final output.
        """
        ended = [s["index"] for s in self.stages if s["end"] is not None and s["index"] not in self.announced
                 and second - FINALIZE_AFTER_S > s["end"]]
        self._announce(ended)

    def complete_paused_stage(self, now: float) -> None:
        """Standalone, paused, no user running and every request drained: the stage that just ended is
        complete now (no worker report can still come), so its figures are announced without the wait."""
        self.fold(upto=int(now))
        self._announce([s["index"] for s in self.stages if s["end"] is not None and s["index"] not in self.announced])

    def _announce(self, ended: list[int]) -> None:
        out = getattr(self.environment.parsed_options, "stampede_out", "") if self.environment.parsed_options else ""
        if not ended or not out:
            return
        self.announced.update(ended)
        path = os.path.join(os.path.dirname(out), STAGES_SO_FAR)
        tmp = f"{path}.tmp"
        with open(tmp, "w") as handle:
            json.dump(self.figures(time.time()), handle)
        os.replace(tmp, path)
        for index in ended:
            print(f"{STAGE_END_MARK} index={index} name={self.stages[index]['name']}", flush=True)

    def pause(self, now: float) -> None:
        """The running stage ends and no stage runs (a live search waits for its owner's next step):
        the seconds until the next stage starts belong to none."""
        if self.current_stage is not None:
            self.stages[self.current_stage]["end"] = now
        self.current_stage = None

    def enter_stage(self, index: int, now: float, *, from_users: int | None = None) -> None:
        if self.current_stage is not None:
            self.stages[self.current_stage]["end"] = now
        self.current_stage = index
        stage = self.stages[index]
        stage["start"] = now
        # the users this master ran before (none for a master restarted into this stage: it spawns them again)
        previous_users = self.stages[index - 1]["users"] if index > 0 and self.stages[index - 1]["start"] else 0
        if from_users is not None:  # after a pause with no users: the stage ramps from there
            previous_users = from_users
        if stage["users"] <= previous_users:
            stage["steady_from"] = int(now)
        # A second's requests belong to one stage. The ticker tags a second as it begins and the
        # shape changes stage a moment later, so the second goes to the stage that runs most of it
        # (the first stage's first second would otherwise belong to none). A stage that ramps up takes
        # it however late it starts: its spawn's first requests (logins, new connections) would
        # otherwise count in the steady part of the stage before (a 500-user level's steady p95 read
        # 35.9 ms against the target's 21.2 ms from that one second; every other second 21-22 ms).
        second = int(now)
        tagged = self.timeline.get(second)
        ramps = stage["steady_from"] is None
        if tagged is None or (tagged[0] != index and (ramps or now - second < 0.5)):
            if tagged is not None:
                self.phase_seconds[f"{tagged[0]}/{tagged[1]}"] -= 1
            phase = "steady" if stage["steady_from"] is not None else "ramp"
            self.timeline[second] = self.tag(index, phase, tagged[2] if tagged else 0)
            self.phase_seconds[f"{index}/{phase}"] += 1
        logger.info("stampede: stage %s (%d users) starts", stage["name"], stage["users"])
        print(f"{STAGE_START_MARK} index={index} users={stage['users']} name={stage['name']}", flush=True)
        open_model.stage_started(self.environment, self.plan, stage, now)

    def fold(self, upto: int) -> None:
        for sec in sorted(s for s in self.pending_lag if s <= upto):
            stage_index, phase = self.phase_at(sec)
            for counts in self.pending_lag.pop(sec):
                if stage_index is not None:
                    self.loop_lag.setdefault(f"{stage_index}/{phase}", LatencyHistogram()).merge(counts)
        for sec in sorted(s for s in self.pending if s <= upto):
            stage_index, phase = self.phase_at(sec)
            unstreamed = self.unstreamed.setdefault((sec, f"{stage_index}/{phase}" if stage_index is not None else None), {})
            for endpoints in self.pending.pop(sec):
                for endpoint, (counts, failures, errors) in endpoints.items():
                    self.watch.add(sec, endpoint, counts, failures)
                    if self.stream is not None:
                        delta = unstreamed.setdefault(endpoint, [LatencyHistogram(), 0, defaultdict(int)])
                        delta[0].merge(counts)
                        delta[1] += failures
                        for message, n in errors.items():
                            delta[2][message] += n
                    if stage_index is not None:
                        key = f"{stage_index}/{phase}"
                        slot = self.phases.setdefault(key, {}).setdefault(
                            endpoint, {"histogram": DenseLatencyHistogram(), "failures": 0, "errors": defaultdict(int)}
                        )
                        slot["histogram"].merge(counts)
                        slot["failures"] += failures
                        for message, n in errors.items():
                            slot["errors"][message] += n
                        self.intervals.add(stage_index, sec, endpoint, counts, failures)
                    second = self.open_seconds.setdefault(sec, [LatencyHistogram(), 0, 0])
                    second[0].merge(counts)
                    second[1] += sum(counts.values())
                    second[2] += failures

    def phase_at(self, sec: int) -> tuple[int | None, str]:
        """The stage and phase that requests completed in ``sec`` count for (none: older than the tags kept)."""
        if self.timeline_kept_from is not None and sec < self.timeline_kept_from and sec not in self.timeline:
            return None, "ramp"
        return figure_stream.phase_at(self.timeline, sec)

    def forget_old_tags(self, now: int) -> None:
        """Drop the streamed tags older than :data:`KEEP_TAGGED_S`, but the run's first (``write`` reads them back)."""
        if self.timeline_streamed_upto is None or not self.timeline:
            return
        if self.timeline_first is None:
            self.timeline_first = min(self.timeline)
        cutoff = min(now - KEEP_TAGGED_S, self.timeline_streamed_upto)
        start = self.timeline_kept_from if self.timeline_kept_from is not None else self.timeline_first + 1
        for sec in range(start, cutoff):
            if sec != self.timeline_first:
                self.timeline.pop(sec, None)
        self.timeline_kept_from = max(start, cutoff)

    def finalize(self, before: int) -> None:
        for sec in sorted(s for s in self.open_seconds if s < before):
            histogram, requests, failures = self.open_seconds.pop(sec)
            self.closed_seconds[sec] = [histogram, requests, failures]
            self.series.append(figure_stream.series_row(sec, self.stages, self.timeline, requests, failures, histogram))
        while self.closed_seconds and next(iter(self.closed_seconds)) < before - KEEP_CLOSED_S:
            del self.closed_seconds[next(iter(self.closed_seconds))]  # in time order: finalized oldest first

    def recent(self, now: int, window_s: int) -> tuple[LatencyHistogram, int, int]:
        histogram, requests, failures = LatencyHistogram(), 0, 0
        for sec, (h, r, f) in [*self.closed_seconds.items(), *self.open_seconds.items()]:
            if now - window_s <= sec < now:
                histogram.merge(h)
                requests += r
                failures += f
        return histogram, requests, failures

    # -- stop, abort, progress ---------------------------------------------
    def request_stop(self, reason: str, **details: Any) -> None:
        if self.stop_reason is None:
            self.stop_reason = {"reason": reason, "at": time.time(), **details}
            logger.warning("stampede: stopping the load: %s", reason)
            print(f"{STOP_MARK} {json.dumps(self.stop_reason, default=str)}", flush=True)

    def check_stop_file(self) -> None:
        path = getattr(self.environment.parsed_options, "stampede_stop_file", "")
        if path and os.path.exists(path):
            try:
                text = open(path).read().strip()
            except OSError:
                text = ""
            if text.startswith("{"):  # {"reason": ..., "kind": ...} from the supervisor (e.g. target_unhealthy)
                try:
                    request = json.loads(text)
                    self.request_stop(str(request.get("reason") or "stop requested"), kind=stop_kind(request.get("kind")))
                    return
                except (ValueError, AttributeError):
                    pass
            self.request_stop(text or "stop requested", kind=StopKind.KILL_SWITCH)

    def check_abort(self, second: int) -> None:
        """Judge the running stage's thresholds on the last complete window; slide the rolling windows."""
        self.watch.check(second)

    def print_progress(self, now: float) -> None:
        interval = float(self.plan.get("progress_interval_s", 5))
        if now - self.last_progress < interval or self.current_stage is None:
            return
        self.last_progress = now
        histogram, requests, failures = self.recent(int(now), int(interval) + 3)
        window = interval + 3
        stage = self.stages[self.current_stage]
        users = self.environment.runner.user_count if self.environment.runner else 0
        p95 = histogram.percentile_ms(0.95)
        # print (not log): the parent process relays these lines to the task log / terminal as they come
        print(
            f"[stampede] stage={stage['name']} users={users}/{stage['users']} "
            f"rps={requests / window:.1f} p95={'-' if p95 is None else f'{p95:.0f}ms'} "
            f"errors={(failures / requests if requests else 0):.2%}",
            flush=True,
        )

    def end_load(self, now: float) -> None:
        """The shape ended the load: the last stage ends now, and no later second is tagged."""
        if self.load_ended is None:
            self.load_ended = now
            open_model.load_ended(self.environment, self.plan)
            if self.current_stage is not None and self.stages[self.current_stage]["end"] is None:
                self.stages[self.current_stage]["end"] = now

    def phase_durations(self, now: float) -> dict[str, float]:
        """Seconds per stage/phase (see :func:`stampede.figures.stream.phase_durations`)."""
        return figure_stream.phase_durations(self.phase_seconds, self.stages, self.timeline, self.load_ended, now)

    # -- the figure stream ---------------------------------------------------------------------------
    def checkpoint(self, now: float, *, final: bool = False) -> bool:
        """Append what was merged since the last checkpoint to the stream, durably; then drop the detail.

        Each folded second's per-endpoint histograms (with the stage part they count for), the series
        rows finalized since, the timeline's new tags, the new breaches, and a snapshot of what is small.
        A write the disk refused keeps everything for the next try.
        """
        self.last_checkpoint = now
        if self.stream is None:
            return False
        # only the current second is ever tagged (or retagged, by enter_stage): the rest is streamed already
        newest = max(self.timeline, default=None) if self.timeline_streamed_upto is None else int(now) + 1
        oldest = min(self.timeline, default=0) if self.timeline_streamed_upto is None else self.timeline_streamed_upto
        timeline = [] if newest is None else [
            [sec, *self.timeline[sec]] for sec in range(oldest, max(newest, oldest) + 1) if sec in self.timeline]
        # what moves in a stage: its boundaries, and its loop lag (added as the master writes its output)
        boundaries = [[s["start"], s["end"], s["steady_from"], s.get("loop_lag_p95_ms")] for s in self.stages]
        record: dict[str, Any] = {
            "format": figure_stream.FORMAT, "master": self.master_id, "checkpoint": self.checkpoints + 1,
            "at": now, "started_at": self.started_at, "final": final,
            "stages": self.stages if boundaries != self.stages_streamed else None,  # only when a boundary moved
            "current_stage": self.current_stage, "load_ended": self.load_ended, "stopped": self.stop_reason,
            "created": dict(self.created), "iterations": self.iterations.by_phase(self.timeline),
            "windows": self.watch.snapshot(), "worker_count": self._worker_count(),
            "timeline": timeline,
            "seconds": [[sec, key, {ep: [d[0].counts, d[1], dict(d[2])] for ep, d in endpoints.items()}]
                        for (sec, key), endpoints in sorted(self.unstreamed.items(), key=lambda item: item[0][0])],
            "series": self.series,
            "breaches": self.breaches[self.breaches_streamed:],
            "intervals": self.intervals.finished(before=int(now) - FINALIZE_AFTER_S),  # leave the master once on disk
        }
        if final:
            record["finished_at"] = now
        if not self.stream.append(record):
            return False
        self.checkpoints += 1
        self.unstreamed = {}
        self.series = []  # on disk now; write() reads them back
        self.intervals.forget(record["intervals"])  # so are these
        self.breaches_streamed = len(self.breaches)
        self.stages_streamed = boundaries
        if timeline:
            self.timeline_streamed_upto = timeline[-1][0]
        self.forget_old_tags(int(now))
        return True

    def streamed_history(self) -> tuple[list[dict[str, Any]], dict[int, tuple[int, str, int]], list[dict[str, Any]]]:
        """This master's series rows, whole timeline and finished interval bins, read back from the segments it
        wrote, and what is not streamed yet (the tags in memory are the newest: a second retagged after it was
        streamed)."""
        rows: list[dict[str, Any]] = []
        timeline: dict[int, tuple[int, str, int]] = {}
        intervals: list[dict[str, Any]] = []
        if self.stream is not None:
            for checkpoint in figure_stream.StreamReader(self.stream.written):
                if checkpoint.get("master") == self.master_id:
                    rows.extend(checkpoint.get("series", []))
                    for sec, index, phase, users in checkpoint.get("timeline", []):
                        timeline[int(sec)] = self.tag(int(index), str(phase), users)
                    if checkpoint.get("intervals"):
                        intervals.append(checkpoint["intervals"])
        timeline.update(self.timeline)
        return rows + self.series, timeline, intervals

    def _worker_count(self) -> int:
        return len(self.environment.runner.clients) if isinstance(self.environment.runner, MasterRunner) else 0

    # -- output --------------------------------------------------------------
    def figures(self, now: float) -> dict[str, Any]:
        """The per-stage figures so far, in the output's shape (what ``figures.stages.stage_results`` reads)."""
        return {
            "started_at": self.started_at,
            "stages": self.stages,
            "phases": {
                key: {
                    ep: {"histogram": s["histogram"].to_dict(), "failures": s["failures"], "errors": dict(s["errors"])}
                    for ep, s in endpoints.items()
                }
                for key, endpoints in self.phases.items()
            },
            "phase_seconds": self.phase_durations(now),
            "load_ended": self.load_ended,
            "iterations": self.iterations.by_phase(self.timeline),
            "created": dict(self.created),
            "stopped": self.stop_reason,
            "breaches": list(self.breaches),
        }

    def write(self, path: str) -> None:
        now = time.time()
        if self.current_stage is not None and self.stages[self.current_stage]["end"] is None:
            self.stages[self.current_stage]["end"] = now
        self.fold(upto=int(now) + 60)
        self.finalize(before=int(now) + 60)
        for index, stage in enumerate(self.stages):
            # the steady part is what a stage's figures are judged on; a stage that never settled, its ramp
            lag = self.loop_lag.get(f"{index}/steady") or self.loop_lag.get(f"{index}/ramp")
            if lag is not None:
                stage.update(loop_lag.summary(lag))
        windows = self.watch.finish()  # the worst rolling window of every windowed threshold
        self.checkpoint(now, final=True)  # the stream ends with everything too
        if self.stream is not None:
            self.stream.close()
        rows, timeline, streamed_intervals = self.streamed_history()
        output = {
            **self.figures(now),
            "finished_at": now,
            "series": figure_stream.fill_series(rows, self.stages, timeline, self.load_ended, now),
            "intervals": self.intervals.to_dict(streamed_intervals),  # per long stage, per hour: for the drift analysis
            "windows": windows,
            "worker_count": self._worker_count(),
            "figures_source": FIGURES_SOURCE_MASTER,
            "checkpoints": self.checkpoints,
        }
        tmp = f"{path}.tmp"
        with open(tmp, "w") as handle:
            json.dump(output, handle)
        os.replace(tmp, path)


def _stream_writer(environment) -> StreamWriter | None:
    """The stream beside the master's output (``--stampede-out``): ``stream/`` of the run folder."""
    options = environment.parsed_options
    out = getattr(options, "stampede_out", "") if options else ""
    if not out:
        return None
    return StreamWriter(Path(out).parent / Artifact.FIGURE_STREAM)


LOCUST_PER_SECOND_KEEP_S = 60  # Locust reads the last 12 s of its per-second counts (current_rps)
# its 5-second history rows (charts of --html and the web UI, neither of which Stampede uses): a minute, so they
# are full within any warm-up (120 rows of ~0.8 KiB filled for 10 minutes: ~0.6 MiB/h while they filled)
LOCUST_HISTORY_KEEP = 12


def bound_locust_stats(stats, now: float) -> None:
    """Drop what Locust's own statistics keep for ever and never read again.

    Every ``StatsEntry`` (each endpoint and the total) counts requests and failures per
    second in dicts that only grow, and ``RequestStats.history`` gains a row every 5 s:
    over a day some 86,400 keys per endpoint and 17,280 rows, tens of MiB in the master.
    Locust reads only the last 12 s of the counts; the history serves its HTML report.
    """
    if stats is None:
        return
    oldest = int(now) - LOCUST_PER_SECOND_KEEP_S
    for entry in [*getattr(stats, "entries", {}).values(), getattr(stats, "total", None)]:
        for counts in (getattr(entry, "num_reqs_per_sec", None), getattr(entry, "num_fail_per_sec", None)):
            if counts and min(counts) < oldest:
                for second in [t for t in counts if t < oldest]:
                    del counts[second]
    history = getattr(stats, "history", None)
    if history is not None and len(history) > LOCUST_HISTORY_KEEP:
        del history[:-LOCUST_HISTORY_KEEP]
