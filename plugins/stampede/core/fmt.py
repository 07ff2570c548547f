"""How figures read, the same in the HTML report, in Slack and on the command line.

Every function takes a value that may be missing (``None``) and returns text: a
dash for a missing value, never "None" or "nan". Escaping for a medium (HTML,
Slack mrkdwn) is the renderer's business, not this module's.
"""

from __future__ import annotations

import math
from typing import Any

MISSING = "–"
METRIC_LABELS = {"p50_ms": "p50", "p90_ms": "p90", "p95_ms": "p95", "p99_ms": "p99", "max_ms": "max",
                 "error_rate": "errors", "min_rps": "req/s", "rps": "req/s"}


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def num(value: Any, digits: int = 1) -> str:
    """``1,234.5``; whole numbers without decimals."""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    number = _number(value)
    return MISSING if number is None else f"{number:,.{digits}f}"


def count(value: Any) -> str:
    """``12,345`` (a count: users, requests, entities)."""
    number = _number(value)
    return MISSING if number is None else f"{int(round(number)):,}"


def ms(value: Any, *, unit: bool = True) -> str:
    """``4.2 ms`` under 10 ms, ``312 ms`` above: the precision a reader can use."""
    number = _number(value)
    if number is None:
        return MISSING
    text = f"{number:.1f}" if number < 10 else f"{number:,.0f}"
    return f"{text} ms" if unit else text


def pct(value: Any) -> str:
    """A fraction as a percentage: 0.0123 → ``1.23%``."""
    number = _number(value)
    return MISSING if number is None else f"{number:.2%}"


def rps(value: Any) -> str:
    number = _number(value)
    return MISSING if number is None else f"{number:,.1f} req/s"


def usd(value: Any) -> str:
    """``0.0042 USD`` under a dollar (cents hide a short run's cost), ``1.23 USD`` above."""
    number = _number(value)
    if number is None:
        return MISSING
    return f"{number:,.2f} USD" if abs(number) >= 1 else f"{number:.4f} USD"


def duration(seconds: Any) -> str:
    """``45 s``, ``2 min 5 s``, ``1 h 5 min``."""
    number = _number(seconds)
    if number is None:
        return MISSING
    total = int(round(number))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    return f"{secs} s"


def metric_value(metric: str, value: Any) -> str:
    """A figure by the name of what it measures (``p95_ms``, ``error_rate``, ``min_rps``...)."""
    if metric.endswith("_ms"):
        return ms(value)
    if metric == "error_rate":
        return pct(value)
    if metric.endswith("rps"):
        return rps(value)
    return num(value, 3)


def label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric)


def check_text(metric: str, op: str, limit: Any, value: Any) -> str:
    """``p95 312 ms (must be < 200 ms)``."""
    return f"{label(metric)} {metric_value(metric, value)} (must be {op} {metric_value(metric, limit)})"


def stage_figures(stage: Any) -> str:
    """``1,000 users · 180.2 req/s · p50 22 ms · p95 31 ms · p99 45 ms · errors 0.00%``."""
    return (
        f"{count(stage.users)} users · {rps(stage.rps)} · p50 {ms(stage.p50_ms)} · p95 {ms(stage.p95_ms)} · "
        f"p99 {ms(stage.p99_ms)} · errors {pct(stage.error_rate)}"
    )
