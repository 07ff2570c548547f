"""What the Airflow deployment configures at run time: Variables, read inside tasks only (never at parse time).

- ``stampede_kill_switch``: on unless "", "0", "off", "false", "no"; a Variable that
  cannot be read leaves the local switch (file, env var) in charge;
- ``stampede_environments``: the environments config override (YAML or JSON);
- ``stampede_budget_run_usd`` / ``stampede_budget_month_usd`` and ``stampede_prices``.
"""

from __future__ import annotations

from stampede.cost.estimate import DEFAULT_MONTH_BUDGET_USD, DEFAULT_RUN_BUDGET_USD, Budgets
from stampede.plan.environments import VARIABLE as ENVIRONMENTS_VARIABLE
from stampede.safety import killswitch


def _variable(name: str) -> str | None:
    from airflow.sdk import Variable

    value = Variable.get(name, default=None)
    return str(value) if value is not None and str(value).strip() else None


def kill_switch_reason() -> str | None:
    """The local switch, or the Airflow Variable (read at call time)."""
    reason = killswitch.local_reason()
    if reason:
        return reason
    try:
        value = _variable(killswitch.VARIABLE)
    except Exception:  # noqa: BLE001 - an unreachable metadata DB must not stop the safety poll loop
        return None
    return f"kill switch: {value}" if value and killswitch.is_on(value) else None


def environments_override() -> str | None:
    """The Variable ``stampede_environments`` (YAML or JSON), or None."""
    return _variable(ENVIRONMENTS_VARIABLE)


def budgets() -> Budgets:
    return Budgets(
        run_usd=float(_variable("stampede_budget_run_usd") or DEFAULT_RUN_BUDGET_USD),
        month_usd=float(_variable("stampede_budget_month_usd") or DEFAULT_MONTH_BUDGET_USD),
    )


def prices_override() -> str | None:
    return _variable("stampede_prices")
