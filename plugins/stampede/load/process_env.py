"""The environment a Locust process gets: what the journeys need, never the deployment's secrets.

Team locustfiles run inside these processes, so they must not inherit cloud,
Airflow or Slack credentials from the task that starts them (an Airflow worker
holds ``AWS_*``, ``AIRFLOW_CONN_*``, the Slack token). What they get, and
nothing else:

- the interpreter's basics (``PATH``, ``HOME``, locale, ``TMPDIR``, the venv);
- the run tag, so any locustfile can tag what it creates without importing Stampede;
- the kill switch (its file and its env var) and the reports folder;
- the egress policy (``stampede.load.egress``) when the caller passes it;
- the one target password variable the plan names: ``STAMPEDE_…`` and never a
  name that looks like a cloud, Airflow or Slack credential.

``LOCUST_*`` variables are not passed: Locust reads them as its own options,
and a process's options come from its command line only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stampede.plan.run_plan import RunPlan

RUN_TAG_ENV = "STAMPEDE_RUN_TAG"
EGRESS_ENV = "STAMPEDE_EGRESS_POLICY"  # read by stampede.load.egress (not imported here: it guards the process importing it)
# passed through when set: what a Python process and Locust need to run at all
BASICS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
STAMPEDE = ("STAMPEDE_KILL_SWITCH", "STAMPEDE_KILL_SWITCH_FILE", "STAMPEDE_REPORTS_DIR",
            "STAMPEDE_CHECKPOINT_S")  # the master's checkpoint interval (stampede.figures.stream)
PASSWORD_ENV_NAME = re.compile(r"^STAMPEDE_[A-Z0-9_]{1,60}$")
# never handed to a load process, whatever a caller asks: cloud, Airflow and Slack credentials
DENIED = re.compile(r"^(AWS_|AIRFLOW|SLACK|STAMPEDE_SLACK|GOOGLE_|AZURE_|LOCUST_)|SECRET_ACCESS_KEY|SESSION_TOKEN",
                    re.IGNORECASE)


def load_process_env(*, run_tag: str, password_env: str, extra: Mapping[str, str] | None = None,
                     source: Mapping[str, str] | None = None, egress: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The allow-listed environment of a load process of the run tagged ``run_tag``.

    :param password_env: the variable holding the target accounts' password (the plan's ``password_env``).
    :param extra: further variables the caller sets (the owner watch's, a worker's settings); a name
        that looks like a credential is refused.
    :param egress: the plan's egress policy (``RunPlan.egress_policy()``), as ``STAMPEDE_EGRESS_POLICY``.
    :raises ValueError: ``password_env`` or a name in ``extra`` is not one a load process may receive.
    """
    if not PASSWORD_ENV_NAME.fullmatch(password_env or "") or DENIED.search(password_env):
        raise ValueError(f"password_env: {password_env!r} may not be given to a load process; "
                         "fix: name a STAMPEDE_… variable (default STAMPEDE_TARGET_PASSWORD)")
    denied = sorted(name for name in (extra or {}) if DENIED.search(name))
    if denied:
        raise ValueError(f"load process env: {denied[0]} looks like a credential; fix: do not pass it to Locust")
    source = os.environ if source is None else source
    env = {name: source[name] for name in (*BASICS, *STAMPEDE, password_env) if name in source}
    env["PYTHONUNBUFFERED"] = "1"
    env[RUN_TAG_ENV] = run_tag
    if egress is not None:
        env[EGRESS_ENV] = json.dumps(dict(egress), separators=(",", ":"))
    env.update(extra or {})
    return env


def plan_process_env(plan: RunPlan, *, extra: Mapping[str, str] | None = None,
                     source: Mapping[str, str] | None = None, also_allow: tuple[str, ...] = ()) -> dict[str, str]:
    """:func:`load_process_env` for a :class:`stampede.plan.run_plan.RunPlan`: its tag, password and egress.

    :param also_allow: ``ip:port`` endpoints of Stampede's own that the process must reach besides the
        target (say, the Airflow API server for the kill-switch Variable); never a team's.
    """
    egress = plan.egress_policy()
    egress["addresses"] = sorted({*egress["addresses"], *also_allow})
    return load_process_env(run_tag=plan.run_tag, password_env=plan.password_env, extra=extra, source=source,
                            egress=egress)


def drop_credentials(environ: os._Environ | dict[str, str] = os.environ) -> list[str]:
    """Remove what looks like a credential from this process's own environment; the names removed.

    Defence in depth, run as Stampede's Locust plugin is imported (before any team
    locustfile): a process whose parent did not use :func:`load_process_env` still
    keeps cloud, Airflow and Slack credentials away from ``os.environ``. (The
    initial environment block, ``/proc/self/environ``, is the parent's to clean.)
    """
    removed = sorted(name for name in list(environ) if DENIED.search(name))
    for name in removed:
        environ.pop(name, None)
    return removed
