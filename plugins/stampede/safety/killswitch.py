"""The kill switch: one flag an operator flips to stop every run's load within seconds.

- Airflow: the Variable ``stampede_kill_switch`` set to anything but "", "0", "off", "false"
  (read by :mod:`stampede.surfaces.airflow_config`, which adds it to these checks).
- CLI and anywhere else: the file named by $STAMPEDE_KILL_SWITCH_FILE (default
  ``reports/KILL_SWITCH``) exists, or the env var STAMPEDE_KILL_SWITCH is set on.
The value (or the file's text) is the reason shown in the results and Slack.

**It fails closed.** A switch that cannot be read counts as on, with the reason
in one line: anything at the file's path but a clean "no such file" (a
directory, a dangling link, a file that cannot be read, a parent that cannot be
searched) is on, and so is an Airflow Variable that cannot be read
(``stampede.surfaces.airflow_config``). A run is then refused, or its load
stopped: a safety check that cannot answer must not answer "carry on".
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from stampede.core.paths import reports_root
from stampede.core.stops import StopKind, StopProbe, StopRequest

VARIABLE = "stampede_kill_switch"
OFF = {"", "0", "off", "false", "no"}

ReasonCheck = Callable[[], "str | None"]


def kill_switch_file() -> Path:
    return Path(os.environ.get("STAMPEDE_KILL_SWITCH_FILE") or reports_root() / "KILL_SWITCH")


def is_on(value: object) -> bool:
    """A Variable's or env var's value switches the kill switch on unless it reads as off."""
    return str(value if value is not None else "").strip().lower() not in OFF


def local_reason() -> str | None:
    """Why the kill switch is on (env var or file), or None when it is off; unreadable counts as on."""
    value = os.environ.get("STAMPEDE_KILL_SWITCH", "").strip()
    if is_on(value):
        return f"kill switch: {_one_line(value)}"
    return file_reason(kill_switch_file())


def file_reason(path: Path) -> str | None:
    """The kill-switch file's text when it exists; None only when there is cleanly no such file."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"kill switch: cannot tell whether {path} exists ({exc.strerror}), so it counts as on"
    try:
        text = path.read_text(errors="replace").strip()
    except OSError as exc:
        return f"kill switch: {path} exists but cannot be read ({exc.strerror}), so it counts as on"
    return f"kill switch: {_one_line(text) or path}"


def unreadable(source: str, exc: BaseException) -> str:
    """The reason for a switch whose store failed: on, in one line."""
    return f"kill switch: {source} cannot be read ({_one_line(f'{type(exc).__name__}: {exc}')}), so it counts as on"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:200]


def how_to_clear() -> str:
    return (f"clear the Airflow Variable {VARIABLE}, unset STAMPEDE_KILL_SWITCH "
            f"and remove {kill_switch_file()}")


def as_probe(reason: ReasonCheck = local_reason) -> StopProbe:
    """A stop probe (polled while the load runs) from a kill-switch check."""

    def probe() -> StopRequest | None:
        why = reason()
        return StopRequest(why, StopKind.KILL_SWITCH) if why else None

    return probe
