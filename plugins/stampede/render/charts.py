"""Charts of a run over time, drawn from its 1-second series.

Each chart comes out twice: as inline SVG markup for the HTML report (text kept
as text, no XML prolog, no namespace or metadata URLs) and as a PNG file for
Slack and anything else that wants an image. Long runs are bucketed to at most
``MAX_POINTS`` points per line, so a 24-hour run draws as fast as a short one.

matplotlib is imported inside the functions: importing this module stays cheap
(DAG files are parsed constantly), and figures are built on an explicit Agg
canvas, never through pyplot, so no global backend or figure registry is touched.
"""

from __future__ import annotations

import io
import operator
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stampede.core.records import SeriesPoint, StageResult

MAX_POINTS = 2000
_SHADES = ("#e8eef5", "#f5f7fa")
_LATENCY_COLOURS = {"p50_ms": "#57606a", "p95_ms": "#bf8700", "p99_ms": "#cf222e"}


@dataclass(frozen=True)
class StageSpan:
    """Where one stage sits in the series: ``[start, end)`` in epoch seconds."""

    name: str
    start: int
    end: int
    steady_from: int | None  # first steady second; before it the stage was ramping


@dataclass(frozen=True)
class Chart:
    name: str  # file stem in charts/
    title: str
    caption: str
    svg: str  # inline <svg> markup
    png: Path


def stage_spans(series: Sequence[SeriesPoint]) -> list[StageSpan]:
    """Contiguous runs of the same ``stage`` in the series (seconds outside any stage skipped)."""
    spans: list[StageSpan] = []
    name = start = last = steady = None
    for point in sorted(series, key=lambda p: p.t):
        t = int(point.t)
        if point.stage != name:
            if name is not None:
                spans.append(StageSpan(name, start, last + 1, steady))
            name, start, steady = point.stage, t, None
        if steady is None and point.phase == "steady":
            steady = t
        last = t
    if name is not None:
        spans.append(StageSpan(name, start, last + 1, steady))
    return spans


def bucketed(series: Sequence[SeriesPoint], max_points: int = MAX_POINTS) -> dict[str, Any]:
    """Series as arrays of at most ``max_points`` buckets.

    Rates (``requests``, ``failures``) become the mean per second over the bucket,
    a second absent from the series counting as zero; ``users`` and percentiles
    take the bucket's maximum (a mean of p95s is no percentile, and the worst
    second is the one that matters). ``width`` is the bucket size in seconds.
    """
    import numpy as np

    t = np.fromiter((p.t for p in series), dtype=np.int64, count=len(series))
    t0, span = int(t.min()), int(t.max() - t.min()) + 1
    width = max(1, -(-span // max_points))
    index = (t - t0) // width
    count = int(index.max()) + 1
    seconds = np.minimum(width, span - np.arange(count) * width)
    out: dict[str, Any] = {"t0": t0, "width": width, "x": np.arange(count) * width}
    keys = ("requests", "failures", "users", *_LATENCY_COLOURS)
    # one pass over a day's 86,400 records, not one per key; None becomes NaN (a gap)
    columns = np.array(list(map(operator.attrgetter(*keys), series)), dtype=float).reshape(-1, len(keys))
    for position, key in enumerate(keys[:2]):
        out[key] = np.bincount(index, weights=np.nan_to_num(columns[:, position]), minlength=count) / seconds
    for position, key in enumerate(keys[2:], 2):
        peak = np.full(count, np.nan)
        np.fmax.at(peak, index, columns[:, position])
        out[key] = peak
    return out


def render_charts(series: Sequence[SeriesPoint], stages: Sequence[StageResult], out_dir: Path) -> list[Chart]:
    """Draw the load and latency charts into ``out_dir`` (PNG) and return them with their SVG."""
    import matplotlib

    out_dir.mkdir(parents=True, exist_ok=True)
    spans = stage_spans(series)
    data = bucketed(series) if series else None
    thresholds = {s.name: s.thresholds for s in stages}
    style = {
        "svg.fonttype": "none",
        "font.family": "sans-serif",
        "font.size": 9,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "path.simplify": True,
    }
    with matplotlib.rc_context(style), warnings.catch_warnings():
        # a stage named with a glyph the font lacks must not break the report
        warnings.filterwarnings("ignore", message="Glyph .* missing", category=UserWarning)
        load = _figure(3, 7.0)
        users, rps, errors = load.axes
        latency = _figure(1, 3.2)
        (lat,) = latency.axes
        if data is None:
            for ax in (users, rps, errors, lat):
                ax.text(0.5, 0.5, "no samples recorded", transform=ax.transAxes, ha="center", color="#57606a")
                ax.set_xticks([])
                ax.set_yticks([])
        else:
            t0, unit, unit_name = data["t0"], *_time_unit(data)
            x = data["x"] / unit
            for ax in (users, rps, errors, lat):
                _shade(ax, spans, t0, unit, labelled=ax in (users, lat))
            users.plot(x, data["users"], drawstyle="steps-post", color="#0969da", lw=1.2)
            rps.plot(x, data["requests"], color="#1a7f37", lw=1)
            errors.fill_between(x, data["failures"], step="post", color="#cf222e", alpha=0.35, lw=0)
            errors.plot(x, data["failures"], drawstyle="steps-post", color="#cf222e", lw=0.8)
            for key, colour in _LATENCY_COLOURS.items():
                lat.plot(x, data[key], color=colour, lw=1, label=key.removesuffix("_ms"))
            _threshold_lines(rps, spans, thresholds, "min_rps", t0, unit)
            for key in ("p95_ms", "p99_ms"):
                _threshold_lines(lat, spans, thresholds, key, t0, unit, _LATENCY_COLOURS[key])
            lat.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
            for ax in (errors, lat):
                ax.set_xlabel(f"{unit_name} since start")
        users.set_ylabel("users")
        rps.set_ylabel("requests / s")
        errors.set_ylabel("errors / s")
        lat.set_ylabel("response time (ms)")
        for ax in (users, rps, errors, lat):
            ax.set_ylim(bottom=0)
            ax.grid(axis="y", color="#d0d7de", lw=0.5)
        caption = _caption(data)
        return [
            _export(load, "load", "Users, throughput and errors", caption, out_dir),
            _export(latency, "latency", "Response time percentiles", caption, out_dir),
        ]


def _figure(rows: int, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, height), layout="constrained")
    FigureCanvasAgg(figure)
    figure.subplots(rows, 1, sharex=True, squeeze=False)
    return figure


def _time_unit(data: dict[str, Any]) -> tuple[float, str]:
    length = int(data["x"][-1]) + data["width"]
    if length > 3 * 3600:
        return 3600.0, "hours"
    if length > 180:
        return 60.0, "minutes"
    return 1.0, "seconds"


def _shade(ax, spans: list[StageSpan], t0: int, unit: float, labelled: bool) -> None:
    """Shade each stage (ramp part hatched) and, on labelled axes, name it above the plot."""
    from matplotlib.transforms import blended_transform_factory

    on_top = blended_transform_factory(ax.transData, ax.transAxes)
    # about 150 label characters fit across the axes: turn labels upright when one would crowd
    length = max(spans[-1].end - spans[0].start, 1) if spans else 1
    rotate = any(min(len(s.name), 20) > 150 * (s.end - s.start) / length for s in spans)
    for i, span in enumerate(spans):
        start, end = (span.start - t0) / unit, (span.end - t0) / unit
        ax.axvspan(start, end, color=_SHADES[i % 2], lw=0, zorder=0)
        ramp_end = end if span.steady_from is None else (span.steady_from - t0) / unit
        if ramp_end > start:
            ax.axvspan(start, ramp_end, fill=False, hatch="///", edgecolor="#d0d7de", lw=0, zorder=0)
        if labelled:
            name = span.name if len(span.name) <= 20 else span.name[:19] + "…"
            ax.text(
                (start + end) / 2, 1.02, name, transform=on_top, ha="center", va="bottom",
                rotation=90 if rotate else 0, fontsize=7 if rotate else 8, color="#24292f",
                parse_math=False, clip_on=False,
            )


def _threshold_lines(ax, spans, thresholds, key, t0, unit, colour="#57606a") -> None:
    for span in spans:
        limit = (thresholds.get(span.name) or {}).get(key)
        if limit is not None:
            ax.hlines(limit, (span.start - t0) / unit, (span.end - t0) / unit,
                      colors=colour, linestyles="dashed", lw=0.8)


def _caption(data: dict[str, Any] | None) -> str:
    if data is None:
        return "No time series was recorded for this run."
    text = "Shaded: stages (hatched: ramping). Dashed: thresholds."
    if data["width"] > 1:
        text += (f" Each point covers {data['width']} s: rates are the mean over it,"
                 " users and response times its worst second.")
    return text


def _export(figure, name: str, title: str, caption: str, out_dir: Path) -> Chart:
    png = out_dir / f"{name}.png"
    figure.savefig(png, format="png", dpi=110)
    figure.set_layout_engine("none")  # keep the layout just computed: the SVG needs no second pass
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    return Chart(name=name, title=title, caption=caption, svg=_inline(buffer.getvalue()), png=png)


def _inline(svg: str) -> str:
    """SVG document → markup for inline use in HTML: no prolog, no namespace URLs, fluid width."""
    svg = svg[svg.index("<svg"):]
    head, rest = svg.split(">", 1)
    head = re.sub(r'\s(xmlns(:\w+)?|width|height)="[^"]*"', "", head)
    return f'{head} role="img" style="width:100%;height:auto">{rest}'
