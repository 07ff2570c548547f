"""The master's side of a run: the stage timeline, exact merges, the 1-second series, stop and abort.

Workers ship per-second, per-endpoint histograms with their reports; the
aggregator tags every second with its stage and phase (ramp or steady), folds
the histograms into one per (stage, phase, endpoint) plus a 1-second series,
prints a progress line, polls the stop file and judges the abort thresholds
(the one rule of ``stampede.core.thresholds``). At quit it writes everything as
JSON. Loaded only in Locust processes (never imports Airflow).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from typing import Any

from locust.runners import MasterRunner

from stampede.core.histogram import LatencyHistogram
from stampede.core.stops import StopKind, stop_kind
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

    # -- data in -----------------------------------------------------------
    def add_report(self, report: dict[str, Any]) -> None:
        for sec, endpoints in report.get("seconds", {}).items():
            self.pending[int(sec)].append(endpoints)
        for kind, count in report.get("created", {}).items():
            self.created[kind] += count
        self.iterations.add(report.get(open_model.REPORT_KEY))
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
                self.timeline[second] = (index, phase, users)
                self.phase_seconds[f"{index}/{phase}"] += 1
        ledger.flush(self)  # what was created is on disk within a second
        self.fold(upto=second - 1)  # the current second may still change stage (see enter_stage)
        self.finalize(before=second - FINALIZE_AFTER_S)
        self.announce_ended_stages(second)
        self.check_stop_file()
        self.check_abort(second)
        self.print_progress(now)

    def announce_ended_stages(self, second: int) -> None:
        """A stage whose every second is final: its figures to ``stages_so_far.json``, then a line saying so.

        The supervisor reads them on the line and posts the stage's reply while the run goes on. The last
        stage usually ends with the run; its reply comes from the final output.
        """
        out = getattr(self.environment.parsed_options, "stampede_out", "") if self.environment.parsed_options else ""
        ended = [s["index"] for s in self.stages if s["end"] is not None and s["index"] not in self.announced
                 and second - FINALIZE_AFTER_S > s["end"]]
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

    def enter_stage(self, index: int, now: float) -> None:
        if self.current_stage is not None:
            self.stages[self.current_stage]["end"] = now
        self.current_stage = index
        stage = self.stages[index]
        stage["start"] = now
        previous_users = self.stages[index - 1]["users"] if index > 0 else 0
        if stage["users"] <= previous_users:
            stage["steady_from"] = int(now)
        # A second's requests belong to one stage. The ticker tags a second as it begins and the
        # shape changes stage a moment later, so the second goes to the stage that runs most of it
        # (the first stage's first second would otherwise belong to none).
        second = int(now)
        tagged = self.timeline.get(second)
        if tagged is None or (tagged[0] != index and now - second < 0.5):
            if tagged is not None:
                self.phase_seconds[f"{tagged[0]}/{tagged[1]}"] -= 1
            phase = "steady" if stage["steady_from"] is not None else "ramp"
            self.timeline[second] = (index, phase, tagged[2] if tagged else 0)
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
            for endpoints in self.pending.pop(sec):
                for endpoint, (counts, failures, errors) in endpoints.items():
                    self.watch.add(sec, endpoint, counts, failures)
                    if stage_index is not None:
                        key = f"{stage_index}/{phase}"
                        slot = self.phases.setdefault(key, {}).setdefault(
                            endpoint, {"histogram": LatencyHistogram(), "failures": 0, "errors": defaultdict(int)}
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
        """The stage and phase that requests completed in ``sec`` count for."""
        entry = self.timeline.get(sec)
        if entry is None:
            # a second no tick tagged: the latest stage before it, also after the load ended,
            # when requests in flight finish during the graceful stop (see stampede.load.final_reports)
            earlier = [s for s in self.timeline if s <= sec]
            if not earlier:
                return None, "ramp"  # before the first stage started: not part of any stage
            entry = self.timeline[max(earlier)]
        return entry[0], entry[1]

    def finalize(self, before: int) -> None:
        for sec in sorted(s for s in self.open_seconds if s < before):
            histogram, requests, failures = self.open_seconds.pop(sec)
            self.closed_seconds[sec] = [histogram, requests, failures]
            stage_index, phase = self.phase_at(sec)
            users = self.timeline.get(sec, (None, None, None))[2]
            self.series.append({
                "t": sec,
                "stage": self.stages[stage_index]["name"] if stage_index is not None else None,
                "phase": phase if stage_index is not None else None,
                "users": users,
                "requests": requests,
                "failures": failures,
                "p50_ms": histogram.percentile_ms(0.50),
                "p95_ms": histogram.percentile_ms(0.95),
                "p99_ms": histogram.percentile_ms(0.99),
            })

    def recent(self, now: int, window_s: int) -> tuple[LatencyHistogram, int, int]:
        histogram, requests, failures = LatencyHistogram(), 0, 0
        for old in [s for s in self.closed_seconds if s < now - KEEP_CLOSED_S]:
            del self.closed_seconds[old]
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
        """Seconds per stage/phase: whole tagged seconds, but the run's first and last second only
        as far as load ran in them (a 6 s stage that starts at x.9 and stops at x+6.9 has 6 s, not 7)."""
        durations = {key: float(n) for key, n in self.phase_seconds.items()}
        starts = [s["start"] for s in self.stages if s["start"] is not None]
        end = self.load_ended if self.load_ended is not None else now
        if starts:
            first = self.timeline.get(int(min(starts)))
            if first is not None:
                durations[f"{first[0]}/{first[1]}"] -= min(starts) % 1.0
            last = self.timeline.get(int(end))
            if last is not None:
                durations[f"{last[0]}/{last[1]}"] -= 1.0 - end % 1.0
        return {key: round(max(0.0, value), 3) for key, value in durations.items()}

    def fill_series(self, now: float) -> None:
        """One row for every second of the load, also those in which no request completed."""
        starts = [s["start"] for s in self.stages if s["start"] is not None]
        if not starts:
            return
        seen = {row["t"] for row in self.series}
        end = self.load_ended if self.load_ended is not None else now
        for sec in range(int(min(starts)), int(end) + 1):
            if sec in seen:
                continue
            stage_index, phase = self.phase_at(sec)
            self.series.append({
                "t": sec, "stage": self.stages[stage_index]["name"] if stage_index is not None else None,
                "phase": phase if stage_index is not None else None,
                "users": self.timeline.get(sec, (None, None, None))[2], "requests": 0, "failures": 0,
                "p50_ms": None, "p95_ms": None, "p99_ms": None,
            })
        self.series.sort(key=lambda row: row["t"])

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
        self.fill_series(now)
        for index, stage in enumerate(self.stages):
            # the steady part is what a stage's figures are judged on; a stage that never settled, its ramp
            lag = self.loop_lag.get(f"{index}/steady") or self.loop_lag.get(f"{index}/ramp")
            if lag is not None:
                stage.update(loop_lag.summary(lag))
        output = {
            **self.figures(now),
            "finished_at": now,
            "series": self.series,
            "intervals": self.intervals.to_dict(),  # per long stage, per hour: for the drift analysis
            "windows": self.watch.finish(),  # the worst rolling window of every windowed threshold
            "worker_count": len(self.environment.runner.clients) if isinstance(self.environment.runner, MasterRunner) else 0,
        }
        tmp = f"{path}.tmp"
        with open(tmp, "w") as handle:
            json.dump(output, handle)
        os.replace(tmp, path)
