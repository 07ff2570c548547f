"""The environment a Locust process gets: what the journeys need, never the deployment's secrets.

Team locustfiles run inside these processes, so they must not inherit cloud,
Airflow or Slack credentials from the task that starts them. What they get:
the interpreter's basics, the run tag (so any locustfile can tag what it
creates without importing Stampede), the kill switch, and the target password
variable the plan names.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

RUN_TAG_ENV = "STAMPEDE_RUN_TAG"
# passed through when set: what a Python process and Locust need to run at all
BASICS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
STAMPEDE = ("STAMPEDE_KILL_SWITCH", "STAMPEDE_KILL_SWITCH_FILE", "STAMPEDE_REPORTS_DIR")


def load_process_env(*, run_tag: str, password_env: str, extra: Mapping[str, str] | None = None,
                     source: Mapping[str, str] | None = None) -> dict[str, str]:
    """The allow-listed environment of a load process of the run tagged ``run_tag``."""
    source = os.environ if source is None else source
    env = {name: source[name] for name in (*BASICS, *STAMPEDE, password_env) if name in source}
    env["PYTHONUNBUFFERED"] = "1"
    env[RUN_TAG_ENV] = run_tag
    env.update(extra or {})
    return env
