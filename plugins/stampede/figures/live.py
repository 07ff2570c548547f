"""The server metrics' live file: the sampler's newest points, read by the master's threshold watch.

Apart from :mod:`stampede.figures.server` because the Locust master reads it:
a load process (and the worker image) needs none of the sampler's HTTP clients.
"""

from __future__ import annotations

import json
from pathlib import Path

LIVE_FILE_NAME = "server_metrics.live.json"  # the sampler's newest points, for the master's mid-run judgement
LIVE_KEEP_S = 660.0  # seconds of points the live file keeps: the longest threshold window (600 s) and a margin


def read_live_points(path: str | Path) -> dict[str, list]:
    """The live file's ``{series: [[t, value], ...]}``; empty while it does not exist (yet) or is unreadable."""
    try:
        with open(path) as handle:
            return dict(json.load(handle).get("series") or {})
    except (OSError, ValueError, AttributeError):
        return {}
