"""What the master says as the run goes, for whoever follows it live (the Slack thread's stage replies).

The Locust master prints one line when a stage's figures are complete (every second of it final, the
figures written to ``stages_so_far.json`` beside its output) and one when it stops the load early (the
stop as JSON). The supervisor hands every relayed line to :class:`StageEvents`, which calls back with
the stage's index or the stop. Free of Locust (the supervisor runs in the Airflow task process).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from typing import Any

__all__ = ["LIVE_PAUSE_MAX_S", "OWNER_WORD_WAIT_S", "STAGES_SO_FAR", "STAGE_END_MARK", "STOP_MARK", "StageEvents"]

log = logging.getLogger(__name__)

STAGE_END_MARK = "[stampede] stage-end"
STOP_MARK = "[stampede] stop"
STAGES_SO_FAR = "stages_so_far.json"  # stampede.core.paths.Artifact.STAGES_SO_FAR
# A live search (stampede.load.shape) pauses before each of its next steps: the last step's users stop
# (at most the graceful stop), its figures complete (with workers, its last second final: ~9 s), then
# the owner's word, which the master waits for OWNER_WORD_WAIT_S at most. The master's wall-clock
# limit allows each live step this much on top of its duration.
OWNER_WORD_WAIT_S = 60.0
LIVE_PAUSE_MAX_S = OWNER_WORD_WAIT_S + 30.0

_END = re.compile(re.escape(STAGE_END_MARK) + r" index=(\d+)\b")


class StageEvents:
    """Calls ``on_stage_end(index)`` once per stage and ``on_stop(stop)`` once, from the master's lines.

    A callback that raises is logged and never stops the relay (following the run live is a courtesy;
    the load and its figures do not depend on it).
    """

    def __init__(self, *, on_stage_end: Callable[[int], None] | None = None,
                 on_stop: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.on_stage_end = on_stage_end
        self.on_stop = on_stop
        self.ended: list[int] = []
        self.stopped = False

    def on_line(self, line: str) -> None:
        match = _END.search(line)
        if match and self.on_stage_end is not None:
            index = int(match.group(1))
            if index not in self.ended:
                self.ended.append(index)
                self._call(self.on_stage_end, index)
        elif line.startswith(STOP_MARK + " {") and self.on_stop is not None and not self.stopped:
            try:
                stop = json.loads(line[len(STOP_MARK):])
            except ValueError:
                return
            self.stopped = True
            self._call(self.on_stop, stop)

    @staticmethod
    def _call(callback: Callable[[Any], None], value: Any) -> None:
        try:
            callback(value)
        except Exception as exc:  # noqa: BLE001 - see the class docstring
            log.warning("Following the run live failed: %s: %s", type(exc).__name__, exc)
