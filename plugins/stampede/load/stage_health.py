"""Health between stages: the supervisor checks the target whenever the master starts a new stage.

The Locust master prints ``[stampede] stage-start index=N ...`` as a stage
begins; the supervisor (``locust_runner.run_master``) hands every relayed line
to :class:`StageHealthWatch`. For every stage after the first (the first was
checked in preflight) it probes the target in a background thread, so the kill
switch keeps being polled meanwhile; a failed probe becomes ``problem``, and
the supervisor stops the run through the stop file with kind
``target_unhealthy``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable

__all__ = ["StageHealthWatch"]

log = logging.getLogger(__name__)

_MARK = re.compile(r"\[stampede\] stage-start index=(\d+)\b(?:.*\bname=(.*))?")


class StageHealthWatch:
    """Probe the target when a stage after the first starts; remember the first failure.

    :param check: returns None when the target is healthy, else why not (``stampede.safety.health.probe``).
    """

    def __init__(self, check: Callable[[], str | None]) -> None:
        self.check = check
        self.problem: str | None = None
        self.checked: list[int] = []
        self._lock = threading.Lock()

    def on_line(self, line: str) -> None:
        match = _MARK.search(line)
        if not match:
            return
        index, name = int(match.group(1)), (match.group(2) or "").strip() or f"#{match.group(1)}"
        with self._lock:
            if index == 0 or index in self.checked:
                return
            self.checked.append(index)
        threading.Thread(target=self._probe, args=(name,), daemon=True, name=f"stage-health-{index}").start()

    def _probe(self, stage: str) -> None:
        try:
            problem = self.check()
        except Exception as exc:  # noqa: BLE001 - a broken probe is an unknown health: say so, stop safely
            problem = f"health check failed: {type(exc).__name__}"
        if problem:
            with self._lock:
                if self.problem is None:
                    self.problem = f"target unhealthy before stage {stage}: {problem}"
            log.error("Target unhealthy as stage %s starts: %s", stage, problem)
        else:
            log.info("Target healthy as stage %s starts", stage)
