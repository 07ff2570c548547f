"""CPU-seconds and RSS of a generator, sampled from outside every 0.1 s and read over exact windows.

Every rate the bench compares (k6, bare Locust, Stampede) is *requests the target
counted* in whole seconds ``[start, end)`` over *CPU-seconds the generator used* in
the same seconds. Both ends have to be taken the same way for every tool: with the
pipeline's 1 s sampler on one side and Locust's CSV history (counts written "about
every second", stamped with the whole second) on the other, each window edge was
off by up to a second in an unknown direction, which on a 15 s window moved a
journey / bare ratio between 0.75 and 1.09 from one pair of runs to the next. Here
the CPU counter is read every 0.1 s and interpolated at the window's edges, and the
requests come from the target's own per-second counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psutil

SAMPLE_S = 0.1


class ProcessMeter:
    """Samples CPU-seconds (user + system) and RSS of the processes ``find()`` returns, in a thread.

    ``find`` is called at every sample, so a generator started after the meter (the
    pipeline starts its Locust process itself) is picked up as soon as it exists. A
    process that has exited drops out; its CPU until then stays counted.
    """

    def __init__(self, find: Callable[[], list[psutil.Process]], *, interval_s: float = SAMPLE_S) -> None:
        self.find = find
        self.interval_s = interval_s
        self.points: list[tuple[float, float, float]] = []  # (t, cpu-seconds so far, rss MiB)
        self._last_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="bench-meter")
        self._thread.start()

    @classmethod
    def tree(cls, pid: int) -> ProcessMeter:
        """One process and every process below it."""
        root = psutil.Process(pid)
        return cls(lambda: [root, *root.children(recursive=True)])

    @classmethod
    def locust_below(cls, pid: int) -> ProcessMeter:
        """Every Locust process below ``pid`` (the pipeline's master, workers and their agents' Locusts)."""
        root = psutil.Process(pid)

        def find() -> list[psutil.Process]:
            found = []
            for process in root.children(recursive=True):
                try:
                    if "locust" in " ".join(process.cmdline()):
                        found.append(process)
                except psutil.Error:
                    continue
            return found

        return cls(find)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                processes = self.find()
            except psutil.Error:
                processes = []
            rss = 0.0
            for process in processes:
                try:
                    with process.oneshot():
                        times = process.cpu_times()
                        self._last_cpu[process.pid] = times.user + times.system
                        rss += process.memory_info().rss / 2**20
                except psutil.Error:
                    continue  # exited: its last reading stays in _last_cpu
            self.points.append((time.time(), sum(self._last_cpu.values()), rss))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def cpu_between(self, start: float, end: float) -> float:
        """CPU-seconds used in ``[start, end]``, interpolated between the samples either side of each edge."""
        return self._cpu_at(end) - self._cpu_at(start)

    def _cpu_at(self, t: float) -> float:
        before = [p for p in self.points if p[0] <= t]
        after = [p for p in self.points if p[0] >= t]
        if not before or not after:
            raise RuntimeError(f"bench: no CPU samples around {t:.1f}")
        a, b = before[-1], after[0]
        if b[0] == a[0]:
            return a[1]
        return a[1] + (b[1] - a[1]) * (t - a[0]) / (b[0] - a[0])

    def peak_rss(self) -> float:
        return max((p[2] for p in self.points), default=0.0)


def whole_seconds(first: float, seconds: int) -> tuple[float, float]:
    """The window ``[start, start + seconds)`` of whole seconds beginning after ``first``."""
    start = float(int(first) + 1)
    return start, start + seconds


def wait_until(t: float) -> None:
    while time.time() < t:
        time.sleep(min(0.2, max(0.0, t - time.time())))
