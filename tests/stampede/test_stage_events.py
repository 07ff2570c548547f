"""The master's live lines become one callback per stage end and one per early stop, never more."""

from __future__ import annotations

import json

from stampede.load.stage_events import STAGE_END_MARK, STOP_MARK, StageEvents


def test_each_stage_end_and_the_stop_are_called_back_once_and_other_lines_are_not():
    ended, stops = [], []
    events = StageEvents(on_stage_end=ended.append, on_stop=stops.append)
    stop = {"reason": "kill switch on", "kind": "kill_switch", "at": 1.5}
    for line in ["[stampede] stage-start index=0 users=3 name=a", f"{STAGE_END_MARK} index=0 name=a",
                 f"{STAGE_END_MARK} index=0 name=a", "[stampede] stage=a users=3/3 rps=1.0 p95=4ms errors=0.00%",
                 f"{STOP_MARK} {json.dumps(stop)}", f"{STOP_MARK} {json.dumps({**stop, 'reason': 'again'})}",
                 f"{STAGE_END_MARK} index=1 name=b", f"{STOP_MARK} {{not json"]:
        events.on_line(line)
    assert ended == [0, 1] and stops == [stop]


def test_a_callback_that_raises_never_stops_the_relay():
    def broken(_index: int) -> None:
        raise RuntimeError("Slack exploded")

    events = StageEvents(on_stage_end=broken)
    events.on_line(f"{STAGE_END_MARK} index=0 name=a")  # logged, not raised
    events.on_line(f"{STAGE_END_MARK} index=1 name=b")
    assert events.ended == [0, 1]
