"""What the Airflow deployment configures at run time: Variables, read inside tasks only (never at parse time).

- ``stampede_kill_switch``: on unless "", "0", "off", "false", "no"; a Variable that
  cannot be read counts as on (fail closed: the run is refused or its load stopped,
  the reason in one line);
- ``stampede_environments``: the environments override (YAML or JSON), which may
  only narrow the reviewed file (``stampede.plan.environments``); one that cannot be
  read refuses the run (it might have narrowed it);
- ``stampede_budget_run_usd`` / ``stampede_budget_month_usd``: a finite number of
  dollars, 0 or more, else the run is refused (a "nan" budget would pass every check);
  and ``stampede_prices``.
"""

from __future__ import annotations

import math
import os

from stampede.core.errors import Refusal
from stampede.cost.estimate import DEFAULT_MONTH_BUDGET_USD, DEFAULT_RUN_BUDGET_USD, Budgets
from stampede.plan.environments import VARIABLE as ENVIRONMENTS_VARIABLE
from stampede.plan.run_plan import PASSWORD_ENV
from stampede.safety import killswitch


def mask_target_password(password_env: str = PASSWORD_ENV) -> None:
    """Register the target accounts' password with Airflow's secret masker (task log and supervisor)."""
    from airflow.sdk.log import mask_secret

    password = os.environ.get(password_env)
    if password:
        mask_secret(password, password_env)


def _variable(name: str) -> str | None:
    from airflow.sdk import Variable

    value = Variable.get(name, default=None)
    return str(value) if value is not None and str(value).strip() else None


def kill_switch_reason() -> str | None:
    """The local switch, or the Airflow Variable (read at call time); a Variable that cannot be read is on."""
    reason = killswitch.local_reason()
    if reason:
        return reason
    try:
        value = kill_switch_variable()
    except Exception as exc:  # noqa: BLE001 - whatever broke the read, the switch cannot say "off"
        return killswitch.unreadable(f"the Airflow Variable {killswitch.VARIABLE}", exc)
    return f"kill switch: {' '.join(value.split())[:200]}" if value and killswitch.is_on(value) else None


def kill_switch_variable() -> str | None:
    """The kill-switch Variable from every secrets backend in Airflow's order; raises when any cannot answer.

    ``Variable.get`` cannot be used here: it logs a backend's failure and asks the
    next one, and the task API's backend answers "not found" for a transient error
    too, so a broken store reads as "no kill switch". Each backend is asked
    directly instead, and the API is asked through the task's supervisor channel,
    where only ``VARIABLE_NOT_FOUND`` means there is no switch.
    """
    from airflow.sdk.execution_time.secrets.execution_api import ExecutionAPISecretsBackend
    from airflow.sdk.execution_time.supervisor import ensure_secrets_backend_loaded

    for backend in ensure_secrets_backend_loaded():
        if isinstance(backend, ExecutionAPISecretsBackend):
            value = _variable_through_the_api(killswitch.VARIABLE)
        else:
            value = backend.get_variable(key=killswitch.VARIABLE)
        if value is not None:
            return str(value)
    return None


def _variable_through_the_api(key: str) -> str | None:
    from airflow.sdk.exceptions import ErrorType
    from airflow.sdk.execution_time.comms import ErrorResponse, GetVariable, VariableResult
    from airflow.sdk.execution_time.task_runner import SUPERVISOR_COMMS

    answer = SUPERVISOR_COMMS.send(GetVariable(key=key))
    if isinstance(answer, VariableResult):
        return answer.value
    if isinstance(answer, ErrorResponse) and answer.error == ErrorType.VARIABLE_NOT_FOUND:
        return None
    raise RuntimeError(f"the API server answered {type(answer).__name__} {getattr(answer, 'error', '')}".strip())


def environments_override() -> str | None:
    """The Variable ``stampede_environments`` (YAML or JSON), or None; refuses when it cannot be read."""
    try:
        return _variable(ENVIRONMENTS_VARIABLE)
    except Exception as exc:  # noqa: BLE001 - the override only narrows: without it, nothing may run
        raise Refusal(f"Variable {ENVIRONMENTS_VARIABLE}", f"cannot be read ({type(exc).__name__}: {exc})",
                      "repair the Airflow metadata database or secrets backend, then retry") from None


def budgets() -> Budgets:
    return Budgets(
        run_usd=_dollars("stampede_budget_run_usd", DEFAULT_RUN_BUDGET_USD),
        month_usd=_dollars("stampede_budget_month_usd", DEFAULT_MONTH_BUDGET_USD),
    )


def _dollars(name: str, default: float) -> float:
    raw = _variable(name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise Refusal(f"Variable {name}", f"{raw.strip()[:40]!r} is not a number of dollars, 0 or more",
                      f"set it to e.g. {default:g}, or delete it for the default")
    return value


def prices_override() -> str | None:
    return _variable("stampede_prices")
