"""The analysis charts of the report: server metrics beside the load, the trend, the capacity curve.

Same rules as :mod:`stampede.render.charts` (explicit Agg canvas, inline SVG plus a PNG
in ``charts/``); each returns ``None`` when the run has nothing to draw. The server
chart draws the sampled points (the ``server_metrics.json`` document the caller
passes), not the summary in results.json.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from stampede.analysis.capacity import usl_throughput
from stampede.core import fmt
from stampede.core.records import RunResult
from stampede.render.charts import MAX_POINTS, Chart, _export, _figure, _shade, stage_spans

__all__ = ["capacity_chart", "render_analysis_charts", "server_chart", "trend_chart"]

_STYLE = {
    "svg.fonttype": "none", "font.family": "sans-serif", "font.size": 9,
    "axes.spines.top": False, "axes.spines.right": False, "path.simplify": True,
}
_ROLE_ROWS = (  # (row label, roles drawn in it)
    ("CPU (% of a core)", ("cpu",)),
    ("memory", ("memory",)),
    ("DB pool (connections)", ("pool_size", "pool_in_use", "pool_waiting")),
    ("DB connections", ("connections",)),
    ("server latency (ms)", ("latency",)),
    ("server errors", ("errors",)),
)
_VERDICT_COLOURS = {"pass": "#1a7f37", "fail": "#cf222e", "invalid": "#9a6700"}


def render_analysis_charts(result: RunResult, server_document: Mapping[str, Any] | None,
                           out_dir: Path) -> list[Chart]:
    import matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    charts = []
    with matplotlib.rc_context(_STYLE), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        for build in (server_chart, capacity_chart, trend_chart):
            chart = build(result, server_document, out_dir)
            if chart is not None:
                charts.append(chart)
    return charts


def server_chart(result: RunResult, document: Mapping[str, Any] | None, out_dir: Path) -> Chart | None:
    series = (document or {}).get("series") or {}
    rows = []
    for label, roles in _ROLE_ROWS:
        lines = [(name, e) for name, e in series.items() if e.get("role") in roles and e.get("points")]
        if lines:
            rows.append((label, lines))
    if not rows:
        return None
    load = result.series
    spans = stage_spans(load)
    t0 = min([p.t for p in load] + [e["points"][0][0] for _, lines in rows for _, e in lines])
    figure = _figure(len(rows) + 1, 1.6 * (len(rows) + 1) + 0.6)
    axes = figure.axes
    users_ax = axes[0]
    if load:
        users_ax.plot(*_thinned([p.t - t0 for p in load], [p.users or 0 for p in load]),
                      drawstyle="steps-post", color="#0969da", lw=1.2)
    users_ax.set_ylabel("users")
    colours = ("#8250df", "#bf8700", "#cf222e", "#1a7f37", "#57606a")
    for ax, (label, lines) in zip(axes[1:], rows):
        for index, (name, entry) in enumerate(lines):
            xs, ys = _thinned([t - t0 for t, _ in entry["points"]], [v for _, v in entry["points"]])
            style = {"drawstyle": "steps-post"} if (entry.get("role") or "").startswith("pool") else {}
            ax.plot(xs, ys, color=colours[index % len(colours)], lw=1.1, label=name, **style)
            if entry.get("limit"):
                ax.axhline(entry["limit"], color="#57606a", ls="dashed", lw=0.8)
        ax.set_ylabel(label)
        if len(lines) > 1 or label.startswith("memory"):
            ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    for index, ax in enumerate(axes):
        _shade(ax, spans, t0, 1.0, labelled=index == 0)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", color="#d0d7de", lw=0.5)
    axes[-1].set_xlabel("seconds since start")
    source = (document or {}).get("source", "?")
    caption = (f"The target's own metrics ({source}, every {document.get('interval_s', '?')} s) under the load above. "
               "Shaded: stages. Dashed: configured limits.")
    return _export(figure, "server", "Server metrics beside the load", caption, out_dir)


def _thinned(xs: Sequence[float], ys: Sequence[float], max_points: int = MAX_POINTS) -> tuple[Any, Any]:
    """At most ``max_points`` points: the highest value of each slice of time (a day of 2-second samples is
    43,200 points a line; drawn whole, the report's inline SVG grew by megabytes, and a peak or a leak
    must still show)."""
    if len(xs) <= max_points:
        return xs, ys
    import numpy as np

    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    order = np.argsort(x, kind="stable")
    x, y = x[order], y[order]
    span = (x[-1] - x[0]) or 1.0
    slices = np.minimum(max_points - 1, ((x - x[0]) / span * max_points).astype(int))
    starts = np.flatnonzero(np.r_[True, slices[1:] != slices[:-1]])
    return x[starts], np.maximum.reduceat(y, starts)


def capacity_chart(result: RunResult, _document: Mapping[str, Any] | None, out_dir: Path) -> Chart | None:
    points = [(s.users, s.rps, s.good) for s in result.steps if s.users and s.rps] or [
        (s.users, s.rps, s.passed) for s in result.stages if s.users and s.rps]
    capacity, breaking = result.capacity, result.breaking_point
    levels = len({u for u, _, _ in points})
    if levels < 2 or (levels < 3 and capacity is None and breaking is None):  # two points make no curve
        return None
    figure = _figure(1, 3.4)
    (ax,) = figure.axes
    for users, rps, good in points:
        ax.plot(users, rps, "o", ms=5, color="#1a7f37" if good else "#cf222e" if good is False else "#57606a")
    if capacity is not None:
        top = max(u for u, _, _ in points) * 2
        xs = [top * i / 200 for i in range(1, 201)]
        ys = [float(usl_throughput(x, capacity.lambda_rps, capacity.sigma, capacity.kappa)) for x in xs]
        ax.plot(xs, ys, color="#0969da", lw=1.2,
                label=f"USL fit (σ={capacity.sigma:.3g}, κ={capacity.kappa:.3g}, R²={capacity.r_squared:.2f})")
        if capacity.peak_users and capacity.peak_users <= top:
            ax.axvline(capacity.peak_users, color="#0969da", ls="dotted", lw=0.8)
    if breaking is not None and breaking.users:
        ax.axvline(breaking.users, color="#cf222e", ls="dashed", lw=1,
                   label=f"breaking point: {fmt.count(breaking.users)} users")
    ax.set_xlabel("users")
    ax.set_ylabel("requests / s")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(color="#d0d7de", lw=0.5)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", frameon=False, fontsize=8)
    caption = ("Throughput against users: green held the thresholds, red did not"
               + ("; blue: the capacity model." if capacity is not None else "."))
    return _export(figure, "capacity", "Breaking-point curve and capacity model", caption, out_dir)


def trend_chart(result: RunResult, _document: Mapping[str, Any] | None, out_dir: Path) -> Chart | None:
    runs = result.trend
    if len(runs) < 2:
        return None
    figure = _figure(1, 3.0)
    (ax,) = figure.axes
    names = list(dict.fromkeys(name for run in runs for name in run.stages))
    xs = list(range(len(runs)))
    for name in names[:8]:
        ys = [run.stages[name].p95_ms if name in run.stages else None for run in runs]
        ax.plot(xs, [math.nan if y is None else y for y in ys], lw=1, marker=None, label=name)
        for x, y, run in zip(xs, ys, runs):
            if y is not None:
                ax.plot(x, y, "o", ms=4, color=_VERDICT_COLOURS.get(run.verdict, "#57606a"))
    ax.set_xticks(xs, [run.started_at[5:16].replace("T", " ") for run in runs], rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("p95 (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(axis="y", color="#d0d7de", lw=0.5)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=8)
    caption = f"p95 per stage over the last {len(runs)} runs of this scenario and target (dots: green pass, red fail)."
    return _export(figure, "trend", "Trend", caption, out_dir)
