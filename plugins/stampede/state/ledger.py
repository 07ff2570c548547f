"""The cost ledger: each run's estimated and actual cloud cost, for the month-to-date budget.

A small SQLite file under the reports root (``cost_ledger.sqlite``, table
``cost_runs``), one row per run id, upserted: the cost check writes the estimate
before any worker starts, the teardown writes the actual. A run's spend counts
as its actual once known, else as its estimate (a run in flight reserves its
estimate). Kept apart from the report history so the two never collide.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from datetime import datetime, timezone
from pathlib import Path

from stampede.core.paths import reports_root

FILE_NAME = "cost_ledger.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS cost_runs (
    run_id TEXT PRIMARY KEY,
    month TEXT NOT NULL,            -- YYYY-MM (UTC) of the estimate
    provider TEXT NOT NULL,
    workers INTEGER NOT NULL,
    size TEXT NOT NULL,
    estimate_usd REAL NOT NULL,
    actual_usd REAL,                -- NULL until the workers are torn down
    updated_at REAL NOT NULL
)
"""


def month_of(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m")


class CostLedger:
    """Reads and writes ``cost_runs`` in ``path`` (created on first use).

    :param path: The SQLite file; usually ``<reports root>/cost_ledger.sqlite``.
    """

    def __init__(self, *, path: Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self.path, timeout=30)
        connection.execute(_SCHEMA)
        return connection

    def record_estimate(
        self, *, run_id: str, provider: str, workers: int, size: str, estimate_usd: float, now: float | None = None,
    ) -> None:
        now = time.time() if now is None else now
        with closing(self._connect()) as db, db:
            db.execute(
                "INSERT INTO cost_runs (run_id, month, provider, workers, size, estimate_usd, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET provider=excluded.provider, "
                "workers=excluded.workers, size=excluded.size, estimate_usd=excluded.estimate_usd, "
                "updated_at=excluded.updated_at",
                (run_id, month_of(now), provider, workers, size, estimate_usd, now),
            )

    def record_actual(self, *, run_id: str, actual_usd: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with closing(self._connect()) as db, db:
            updated = db.execute(
                "UPDATE cost_runs SET actual_usd=?, updated_at=? WHERE run_id=?", (actual_usd, now, run_id),
            ).rowcount
            if not updated:  # no estimate was recorded (e.g. a CLI run): keep the actual anyway
                db.execute(
                    "INSERT INTO cost_runs (run_id, month, provider, workers, size, estimate_usd, actual_usd, "
                    "updated_at) VALUES (?, ?, '', 0, '', 0, ?, ?)", (run_id, month_of(now), actual_usd, now),
                )

    def month_to_date(self, *, month: str, exclude_run_id: str | None = None) -> float:
        """Spend of ``month``: actuals where known, estimates of runs not yet torn down."""
        with closing(self._connect()) as db:
            row = db.execute(
                "SELECT COALESCE(SUM(COALESCE(actual_usd, estimate_usd)), 0) FROM cost_runs "
                "WHERE month=? AND run_id IS NOT ?", (month, exclude_run_id),
            ).fetchone()
        return float(row[0])

    def get(self, run_id: str) -> dict | None:
        with closing(self._connect()) as db:
            db.row_factory = sqlite3.Row
            row = db.execute("SELECT * FROM cost_runs WHERE run_id=?", (run_id,)).fetchone()
        return dict(row) if row else None


def default_ledger() -> CostLedger:
    """The deployment's ledger: ``<reports root>/cost_ledger.sqlite``."""
    return CostLedger(path=reports_root() / FILE_NAME)
