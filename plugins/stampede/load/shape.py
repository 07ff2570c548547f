"""The load shape: plays the plan's stages in order, and ends them all at once when the load is over.

A master started again after one died (``stampede.load.runner``) is given the epoch the
run's first stage started: it plays the stage the clock is in, for what is left of it.
"""

from __future__ import annotations

import time

from locust import LoadTestShape

from stampede.load.final_reports import end_every_user
from stampede.plan.run_plan import RESUME_KEY


class StageShape(LoadTestShape):
    """Plays the plan's stages in order; stops early when the aggregator asks."""

    use_common_options = False
    end_rate: float | None = None

    def tick(self):
        aggregator = getattr(self.runner.environment, "_stampede_aggregator", None)
        if aggregator is None:
            return None
        if aggregator.stop_reason is None:
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
            return 0, self.end_rate
        return None
