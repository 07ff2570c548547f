"""The cost ledger: each run's estimated and actual cloud cost, for the month-to-date budget.

One row per run id in ``stampede_cost_runs`` of the shared state database
(:mod:`stampede.state.db`). The cost check reserves the estimate before any
worker starts (:meth:`CostLedger.reserve`), the teardown replaces it with the
actual. A run's spend counts as its actual once known, else as its estimate, so
a run in flight holds its reservation.

The reservation is one check-and-write under the month's lock
(:func:`stampede.state.db.exclusive`): two runs on two hosts that each fit the
month's remaining budget alone, but not together, are decided one after the
other, and the second sees the first's reservation and is refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import Column, Connection, Float, Integer, String, Table, func, insert, select, update

from stampede.state import db

cost_runs = Table(
    "stampede_cost_runs", db.metadata,
    Column("run_id", String(250), primary_key=True),
    Column("month", String(7), nullable=False, index=True),  # YYYY-MM (UTC) of the estimate
    Column("provider", String(20), nullable=False),
    Column("workers", Integer, nullable=False),
    Column("size", String(40), nullable=False),
    Column("estimate_usd", Float, nullable=False),
    Column("actual_usd", Float),  # NULL until the workers are torn down
    Column("updated_at", Float, nullable=False),
)
TABLES = (cost_runs,)


def month_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m")


class CostLedger:
    """Reads and writes ``stampede_cost_runs``.

    :param url: a SQLAlchemy URL; default the shared state (:func:`stampede.state.db.state_url`).
    """

    def __init__(self, url: str | None = None) -> None:
        self.url = url

    def reserve(
        self, *, run_id: str, provider: str, workers: int, size: str, estimate_usd: float,
        check: Callable[[float], None], now: float | None = None,
    ) -> float:
        """Check the estimate against the month's spend and record it, atomically; the spend it was checked against.

        :param check: called with the month-to-date spend of the other runs, under the
            month's lock; raises to refuse (nothing is recorded then).
        """
        now = time.time() if now is None else now
        month = month_of(now)
        with db.exclusive(f"stampede-budget-{month}", url=self.url, tables=TABLES) as conn:
            spent = _spent(conn, month, exclude_run_id=run_id)
            check(spent)
            _upsert_estimate(conn, run_id=run_id, month=month, provider=provider, workers=workers, size=size,
                             estimate_usd=estimate_usd, now=now)
        return spent

    def record_estimate(
        self, *, run_id: str, provider: str, workers: int, size: str, estimate_usd: float, now: float | None = None,
    ) -> None:
        """Record an estimate without a budget check (a run the caller already decided on)."""
        self.reserve(run_id=run_id, provider=provider, workers=workers, size=size, estimate_usd=estimate_usd,
                     check=lambda _spent: None, now=now)

    def record_actual(self, *, run_id: str, actual_usd: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with db.engine(self.url, tables=TABLES).begin() as conn:
            updated = conn.execute(
                update(cost_runs).where(cost_runs.c.run_id == run_id).values(actual_usd=actual_usd, updated_at=now)
            ).rowcount
            if not updated:  # no estimate was recorded (e.g. a CLI run): keep the actual anyway
                conn.execute(insert(cost_runs).values(
                    run_id=run_id, month=month_of(now), provider="", workers=0, size="", estimate_usd=0.0,
                    actual_usd=actual_usd, updated_at=now,
                ))

    def month_to_date(self, *, month: str, exclude_run_id: str | None = None) -> float:
        """Spend of ``month``: actuals where known, estimates of runs not yet torn down."""
        with db.engine(self.url, tables=TABLES).connect() as conn:
            return _spent(conn, month, exclude_run_id=exclude_run_id)

    def get(self, run_id: str) -> dict | None:
        with db.engine(self.url, tables=TABLES).connect() as conn:
            row = conn.execute(select(cost_runs).where(cost_runs.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None


def _spent(conn: Connection, month: str, *, exclude_run_id: str | None) -> float:
    query = select(func.coalesce(func.sum(func.coalesce(cost_runs.c.actual_usd, cost_runs.c.estimate_usd)), 0.0)
                   ).where(cost_runs.c.month == month)
    if exclude_run_id is not None:
        query = query.where(cost_runs.c.run_id != exclude_run_id)
    return float(conn.execute(query).scalar_one())


def _upsert_estimate(conn: Connection, *, run_id: str, month: str, provider: str, workers: int, size: str,
                     estimate_usd: float, now: float) -> None:
    values = {"provider": provider, "workers": workers, "size": size, "estimate_usd": estimate_usd, "updated_at": now}
    updated = conn.execute(update(cost_runs).where(cost_runs.c.run_id == run_id).values(**values)).rowcount
    if not updated:  # the month's lock is held: nobody inserts this run id meanwhile
        conn.execute(insert(cost_runs).values(run_id=run_id, month=month, **values))


def default_ledger() -> CostLedger:
    """The deployment's ledger, in the shared state database."""
    return CostLedger()
