"""The stock CRM journeys: one Locust ``FastHttpUser`` class per role of the seed plan.

- ``AgentUser`` (``agent``): dashboard, create an escrow, view it.
- ``BrokerUser`` (``broker``): search listings, create one, change its status, page escrows.
- ``AdminUser`` (``admin``): large pages, offset paging, details, delete the run's finished escrows.
- ``ReadonlyUser`` (``readonly``): search and browse with paging, open details; GET only.

``CrmUser`` is their shared base; ``data`` makes the varied, run-tagged data.

The classes load on first access: importing Locust monkey-patches the whole
process with gevent, which must never happen in the pipeline's own process
(Airflow, pytest), so ``stampede.loadtests.journeys.data`` stays importable there.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stampede.loadtests.journeys.admin import AdminUser
    from stampede.loadtests.journeys.agent import AgentUser
    from stampede.loadtests.journeys.base import CrmUser
    from stampede.loadtests.journeys.broker import BrokerUser
    from stampede.loadtests.journeys.readonly import ReadonlyUser

__all__ = ["AdminUser", "AgentUser", "BrokerUser", "CrmUser", "ReadonlyUser"]

_MODULES = {
    "AdminUser": "admin", "AgentUser": "agent", "BrokerUser": "broker", "CrmUser": "base", "ReadonlyUser": "readonly",
}


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
