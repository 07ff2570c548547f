"""Event-loop lag in a load-generating process: how late a timer fires, measured from inside.

CPU and run-queue wait (sampled from outside, ``stampede.load.runner``) miss a
generator whose event loop is *delayed* while the process is neither busy nor
waiting for a core: a greenlet that blocks without yielding (a C call, an
unpatched sleep, a long GC pass, a burst of callbacks). Every response that
arrives meanwhile waits in the socket, and its measured time grows by the delay,
so the generator's p95 drifts above the target's own figure. The probe is one
greenlet that asks for a short sleep, again and again, and records how much
later than asked it woke: that lateness is exactly what a response timer suffers
in the same loop. ``drain`` gives one histogram per second; the recorder sends
them with the requests and the aggregator keeps one per stage and phase.
"""

from __future__ import annotations

import time
from typing import Any

import gevent

from stampede.core.histogram import LatencyHistogram

PROBE_INTERVAL_S = 0.05  # 20 probes a second: a cost too small to see, enough for a stage's p95


class LoopLagProbe:
    """Sleeps ``PROBE_INTERVAL_S`` in a loop and records each wake-up's lateness (ms) per second."""

    def __init__(self, interval_s: float = PROBE_INTERVAL_S) -> None:
        self.interval_s = interval_s
        self.seconds: dict[int, LatencyHistogram] = {}
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> LoopLagProbe:
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)
        return self

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        clock, interval = time.perf_counter, self.interval_s
        while True:
            asked = clock()
            gevent.sleep(interval)
            self.record(time.time(), (clock() - asked - interval) * 1000)

    def record(self, now: float, lag_ms: float) -> None:
        second = int(now)
        histogram = self.seconds.get(second)
        if histogram is None:
            histogram = self.seconds[second] = LatencyHistogram()
        histogram.record_ms(max(0.0, lag_ms))

    def drain(self) -> dict[str, dict[int, int]]:
        seconds, self.seconds = self.seconds, {}
        return {str(second): histogram.to_dict() for second, histogram in seconds.items()}


def summary(histogram: LatencyHistogram) -> dict[str, Any]:
    """A stage's lag figures for its output: p95, p99 and max (ms), and how many probes."""
    return {
        "loop_lag_p95_ms": histogram.percentile_ms(0.95), "loop_lag_p99_ms": histogram.percentile_ms(0.99),
        "loop_lag_max_ms": histogram.max_ms(), "loop_lag_probes": histogram.total,
    }
