"""The kill switch: one flag an operator flips to stop every run's load within seconds.

- Airflow: the Variable ``stampede_kill_switch`` set to anything but "", "0", "off", "false".
- CLI and anywhere else: the file named by $STAMPEDE_KILL_SWITCH_FILE (default
  ``reports/KILL_SWITCH``) exists, or the env var STAMPEDE_KILL_SWITCH is set on.
The value (or the file's text) is the reason shown in the results and Slack.
"""

from __future__ import annotations

import os
from pathlib import Path
from stampede.core.paths import reports_root

VARIABLE = "stampede_kill_switch"
OFF = {"", "0", "off", "false", "no"}


def kill_switch_file() -> Path:
    default = reports_root() / "KILL_SWITCH"
    return Path(os.environ.get("STAMPEDE_KILL_SWITCH_FILE") or default)


def local_reason() -> str | None:
    """Why the kill switch is on (env var or file), or None when it is off."""
    value = os.environ.get("STAMPEDE_KILL_SWITCH", "").strip()
    if value.lower() not in OFF:
        return f"kill switch: {value}"
    path = kill_switch_file()
    if path.exists():
        text = path.read_text().strip()[:200]
        return f"kill switch: {text or path}"
    return None


def airflow_reason() -> str | None:
    """The local switch, or the Airflow Variable (read at call time, never at parse time)."""
    reason = local_reason()
    if reason:
        return reason
    from airflow.sdk import Variable

    try:
        value = str(Variable.get(VARIABLE, default="") or "").strip()
    except Exception:  # noqa: BLE001 - an unreachable metadata DB must not stop the safety poll loop
        return None
    return f"kill switch: {value}" if value.lower() not in OFF else None
