"""The benchmark's figures, their goals, and the table and JSON they end up in."""

from __future__ import annotations

import operator
from dataclasses import asdict, dataclass, field
from typing import Any

# figure -> (comparison, goal, unit): a figure passes when ``value <op> goal``
GOALS: dict[str, tuple[str, float, str]] = {
    "peer_rps_per_cpu_vs_k6": (">=", 1.5, "x"),  # Stampede's requests per CPU-second / k6's (issue 18)
    "peer_memory_vs_k6": ("<=", 0.1, "x"),  # Stampede's MiB per 1,000 users / k6's (issue 18)
    "peer_journey_vs_bare_locust": (">=", 0.9, "x"),  # the agent journey / bare Locust on the seed's workflow
    "journey_rps_ratio": (">=", 0.9, ""),
    "users_held": (">=", 30_000, "users"),  # issue 18: one and a half times the seed's stress limit
    "mib_per_1000_users": ("<=", 20.0, "MiB"),
    "cpu_pct_per_1000_users": ("<=", float("inf"), "% core"),  # reported, no goal
    "p95_error_ms": ("<=", 5.0, "ms"),  # at 10,000 users
    "p95_error_ms_1000": ("<=", 3.0, "ms"),
    "p95_error_ms_30000": ("<=", 5.0, "ms"),
    "pipeline_overhead_s": ("<=", 10.0, "s"),  # under `airflow dags test` (issue 18)
    "pipeline_overhead_scheduler_s": ("<=", 15.0, "s"),  # under the scheduler, LocalExecutor (issue 18)
    "search_wall_per_step_s": ("<=", 1.15, "x"),  # a breaking-point search on one master: wall / steps x step time
    "analysis_s_24h": ("<", 5.0, "s"),  # issue 18: a day analysed in < 5 s ...
    "analysis_peak_mib_24h": ("<", 1024.0, "MiB"),  # ... and < 1 GiB
    "analysis_report_mib_24h": ("<=", 2.0, "MiB"),  # the report of a day opens (report.html alone)
    "drift_leak_start_hour": ("==", 16.0, "h"),  # the planted leak named with its start hour (bench/analysis.py)
    "master_rss_mib_per_h": ("<=", 1.0, "MiB/h"),  # issue 15: flat over a day (24 MiB a day at most)
    "worker_rss_mib_per_h": ("<=", 1.0, "MiB/h"),
    "cleanup_per_s_demo": (">=", 500.0, "/s"),  # issue 18
    "cleanup_per_s_20ms": ("<=", float("inf"), "/s"),  # reported, no goal
    "cleanup_normal_s": ("<=", float("inf"), "s"),  # reported, no goal
}
_OPS = {">=": operator.ge, "<=": operator.le, "<": operator.lt, ">": operator.gt, "==": operator.eq}


@dataclass
class Figure:
    """One measured figure, judged against its goal; ``details`` say how it was measured."""

    name: str
    value: float | None
    measured_at: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    lower_bound: bool = False  # the true value is at least this (the bench stopped climbing)

    @property
    def goal(self) -> tuple[str, float, str]:
        return GOALS.get(self.name, ("", float("nan"), ""))

    @property
    def passed(self) -> bool | None:
        op, goal, _unit = self.goal
        if self.value is None or not op:
            return None
        return bool(_OPS[op](self.value, goal))

    def to_dict(self) -> dict[str, Any]:
        op, goal, unit = self.goal
        data = asdict(self)
        data.update(goal=None if goal == float("inf") else goal, op=op, unit=unit, passed=self.passed)
        return data


def table(figures: list[Figure]) -> str:
    rows = [("figure", "value", "goal", "result")]
    for figure in figures:
        op, goal, unit = figure.goal
        value = "-" if figure.value is None else _fmt(figure.value) + (" (at least)" if figure.lower_bound else "")
        goal_text = "-" if goal == float("inf") else f"{op} {_fmt(goal)} {unit}".strip()
        result = {True: "pass", False: "FAIL", None: "n/a"}[figure.passed if goal != float("inf") else None]
        rows.append((figure.name, f"{value} {unit}".strip() if figure.value is not None else value, goal_text, result))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if value else "0"
