"""The load shape: plays the plan's stages in order, and ends them all at once when the load is over.

A master started again after one died (``stampede.load.runner``) is given the epoch the
run's first stage started: it plays the stage the clock is in, for what is left of it.

A plan with *live* stages (the breaking-point search on one master) plays each step, then pauses
with no users until the step's figures are complete and its owner, who judged them, writes the
next step's level into the control file beside the output (or says the search is over).
"""

from __future__ import annotations

import json
import os
import time

import gevent
from locust import LoadTestShape
from locust.runners import STATE_MISSING

from stampede.core.stops import StopKind
from stampede.load.final_reports import GRACEFUL_STOP_S, end_every_user
from stampede.load.stage_events import OWNER_WORD_WAIT_S  # a paused search whose owner says nothing ends
from stampede.plan.run_plan import RESUME_KEY

SEARCH_CONTROL = "search_control.json"  # stampede.core.paths.Artifact.SEARCH_CONTROL: the owner's word on the next step
WORD_POLL_S = 0.9  # within one of Locust's 1-second shape ticks, the control file is read every 50 ms


class StageShape(LoadTestShape):
    """Plays the plan's stages in order; stops early when the aggregator asks."""

    use_common_options = False
    end_rate: float | None = None
    paused_at: float | None = None  # live stages: when the last step ended and the wait for the next began
    idle_reports: dict[str, float] | None = None  # live stages with workers: worker -> its last report with no user

    def tick(self):
        aggregator = getattr(self.runner.environment, "_stampede_aggregator", None)
        if aggregator is None:
            return None
        if aggregator.stop_reason is None:
            if any(stage.get("live") for stage in aggregator.stages):
                step = self._live_step(aggregator)
                if step is not None:
                    return step
            else:
                resumed = aggregator.plan.get(RESUME_KEY)  # a restarted master: the plan goes on where the clock is
                run_time = time.time() - float(resumed) if resumed else self.get_run_time()
                elapsed = 0.0
                for index, stage in enumerate(aggregator.stages):
                    elapsed += stage["duration_s"]
                    if run_time < elapsed:
                        if aggregator.current_stage != index:
                            aggregator.enter_stage(index, time.time())
                        return stage["users"], stage["spawn_rate"]
        now = time.time()
        aggregator.end_load(now)
        if aggregator.final_reports is None:  # standalone: this process runs the users
            end_every_user(self.runner)
            return None
        if aggregator.final_reports.pending(now):
            # every user stops at once (gracefully) while the workers' final reports come in
            self.end_rate = self.end_rate or max(1.0, float(self.runner.user_count))
            # the reports come within a fraction of a second of the flush: waited for here, not a tick later
            deadline = time.time() + WORD_POLL_S
            while aggregator.final_reports.pending(time.time()) and time.time() < deadline:
                gevent.sleep(0.02)
            if aggregator.final_reports.pending(time.time()):
                return 0, self.end_rate
        return None

    def _live_step(self, aggregator) -> tuple[int, float] | None:
        """The users and spawn rate now, or None when the search is over (the load ends)."""
        now = time.time()
        index = aggregator.current_stage
        if index is None and self.paused_at is None:  # the first step: its level is known before the start
            aggregator.enter_stage(0, now)
            index = 0
        if index is not None:
            stage = aggregator.stages[index]
            left = stage["start"] + stage["duration_s"] - now
            if left >= 1.0:
                return stage["users"], stage["spawn_rate"]
            if left > 0:  # the next tick would be late: the step lasts what it was planned to
                gevent.sleep(left)
                now = time.time()
            aggregator.pause(now)  # the step is over: none of the pause counts for it or the next
            self.paused_at = now
            self.end_rate = max(1.0, float(self.runner.user_count))
            if aggregator.final_reports is None:
                self._complete_in_process(aggregator)
            else:
                self._listen_for_idle_workers()
        following = self._last_played(aggregator) + 1
        if following >= len(aggregator.stages) or not aggregator.stages[following].get("live"):
            return None
        word = _owner_word(self.runner.environment, following)
        deadline = time.time() + WORD_POLL_S
        while word is None and time.time() < deadline:  # the owner answers within a fraction of a second
            if aggregator.final_reports is not None:
                self._complete_from_workers(aggregator)
            gevent.sleep(0.05)
            word = _owner_word(self.runner.environment, following)
        now = time.time()
        if word is None:
            if now - (self.paused_at or now) > OWNER_WORD_WAIT_S:
                aggregator.request_stop(f"the search's owner sent no next step within {OWNER_WORD_WAIT_S:.0f} s",
                                        kind=StopKind.STOPPED)
                return None
            return 0, self.end_rate or 1.0
        if word.get("end"):
            return None
        ended = aggregator.stages[following - 1]["end"]
        if ended is not None and int(now) == int(ended):
            # a second counts for one stage: this one's requests for the step that ended in it; so the
            # next step starts with the next second, the first it has all to itself
            gevent.sleep(1.0 - now % 1.0 + 0.001)
            now = time.time()
        stage = aggregator.stages[following]
        for key in ("name", "users", "spawn_rate", "rate"):
            if key in word:
                stage[key] = word[key]
        aggregator.enter_stage(following, now, from_users=0)
        self.paused_at = None
        return stage["users"], stage["spawn_rate"]

    def _complete_in_process(self, aggregator) -> None:
        """Standalone: every user stops gracefully (what is in flight finishes and is recorded), then
        everything recorded is merged and the step's figures are announced at once."""
        end_every_user(self.runner)
        deadline = time.time() + GRACEFUL_STOP_S + 2.0
        while self.runner.user_count > 0 and time.time() < deadline:
            gevent.sleep(0.02)
        if self.runner.user_count > 0:
            return  # a user still runs: the step is announced by the usual rule, once its seconds are final
        recorder = getattr(self.runner.environment, "_stampede_recorder", None)
        if recorder is not None:
            aggregator.add_report(recorder.drain())
        aggregator.complete_paused_stage(time.time())

    def _listen_for_idle_workers(self) -> None:
        if self.idle_reports is None:
            self.idle_reports = {}
            # registered after the plugin's own listener: a report is merged before it is counted here
            self.runner.environment.events.worker_report.add_listener(self._on_worker_report)

    def _on_worker_report(self, client_id, data) -> None:
        if data.get("user_count") == 0 and self.idle_reports is not None:
            self.idle_reports[client_id] = time.time()

    def _complete_from_workers(self, aggregator) -> None:
        """With workers: a worker's report says how many users it ran when it was made, and its recorder is
        drained after that count (the plugin's listener runs after Locust's). Once every live worker has
        reported no user since the pause began, every request of the step has been merged: it is
        complete then, not when its last second is 8 s old."""
        live = [client.id for client in self.runner.clients.all if client.state != STATE_MISSING]
        if live and self.paused_at is not None and self.idle_reports is not None and all(
                self.idle_reports.get(worker, 0.0) > self.paused_at for worker in live):
            aggregator.complete_paused_stage(time.time())

    @staticmethod
    def _last_played(aggregator) -> int:
        return max((s["index"] for s in aggregator.stages if s.get("start") is not None), default=-1)


def _owner_word(environment, index: int) -> dict | None:
    """The control file's word for step ``index`` (0-based), or None while it has not come."""
    out = getattr(environment.parsed_options, "stampede_out", "") if environment.parsed_options else ""
    if not out:
        return None
    try:
        with open(os.path.join(os.path.dirname(out), SEARCH_CONTROL)) as handle:
            word = json.load(handle)
    except (OSError, ValueError):
        return None
    return word if isinstance(word, dict) and word.get("index") == index else None
