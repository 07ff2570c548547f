"""The run tags Stampede issued: the only tags the reaper may ever delete data for.

Preflight issues a run's tag (every entity the run creates carries it); the
run's end marks it ended (the lease given back, or the final verdict). The
reaper deletes only entities that carry, as a whole token, a tag issued here
that has ended: never by a pattern alone (a postcode such as ``LT-01103`` looks
like a tag and belongs to no run).

A run that dies without reaching its end (a SIGKILLed command line) never ends
its tag; it counts as ended once its ``expires_at`` has passed (the planned load
time plus the lease's margin, the same moment its lease and workers expire), so
its data is reaped and never kept forever.

One tag belongs to one run: issuing a tag already issued to another DAG run
raises :class:`TagClash` (the plan's tag has 48 bits of hash; a clash is refused,
never shared).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone

from sqlalchemy import Column, Float, String, Table, and_, or_, select, update
from sqlalchemy.exc import IntegrityError

from stampede.state import db

__all__ = ["TagClash", "end", "issue", "issued", "run_tags"]

run_tags = Table(
    "stampede_run_tags", db.metadata,
    Column("tag", String(120), primary_key=True),
    Column("run_id", String(250), nullable=False),
    Column("dag_id", String(250), nullable=False, default=""),
    Column("target", String(500), nullable=False, default=""),
    Column("issued_at", String(40), nullable=False),
    Column("expires_at", Float, nullable=True),  # epoch; None: only an explicit end ends it
    Column("ended_at", String(40)),
)


class TagClash(ValueError):
    """The tag was already issued to another run."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def issue(tag: str, *, run_id: str, dag_id: str = "", target: str = "", expires_at: float | None = None) -> None:
    """Record ``tag`` as issued to ``dag_id``/``run_id`` (idempotent for that run; another run's raises ``TagClash``).

    A retried preflight of the same run issues it again: the tag is running again
    (not ended) until its new ``expires_at``.
    """
    engine = db.engine(tables=(run_tags,))
    for _attempt in range(2):
        try:
            with engine.begin() as conn:
                row = conn.execute(select(run_tags.c.run_id, run_tags.c.dag_id).where(run_tags.c.tag == tag)).first()
                if row is None:
                    conn.execute(run_tags.insert().values(tag=tag, run_id=run_id, dag_id=dag_id, target=target,
                                                          issued_at=_now(), expires_at=expires_at))
                    return
                if (row.run_id, row.dag_id) != (run_id, dag_id):
                    raise TagClash(f"run tag {tag} was issued to run {row.dag_id or 'cli'}/{row.run_id}, "
                                   f"not {dag_id or 'cli'}/{run_id}")
                conn.execute(update(run_tags).where(run_tags.c.tag == tag)
                             .values(ended_at=None, expires_at=expires_at, target=target))
                return
        except IntegrityError:  # a concurrent preflight issued it first: look again
            continue


def end(tag: str) -> None:
    """The run that carries ``tag`` is over (idempotent): from now on the reaper may clean up after it."""
    engine = db.engine(tables=(run_tags,))
    with engine.begin() as conn:
        conn.execute(update(run_tags).where(run_tags.c.tag == tag, run_tags.c.ended_at.is_(None)).values(ended_at=_now()))


def issued(*, ended: bool | None = None, now: float | None = None) -> set[str]:
    """Every issued tag (``ended=True``: only those of runs that are over; ``False``: only running ones).

    A run is over when its end was recorded or its ``expires_at`` has passed.
    """
    engine = db.engine(tables=(run_tags,))
    now = time.time() if now is None else now
    over = or_(run_tags.c.ended_at.is_not(None), and_(run_tags.c.expires_at.is_not(None), run_tags.c.expires_at <= now))
    running = and_(run_tags.c.ended_at.is_(None), or_(run_tags.c.expires_at.is_(None), run_tags.c.expires_at > now))
    query = select(run_tags.c.tag)
    if ended is True:
        query = query.where(over)
    elif ended is False:
        query = query.where(running)
    with engine.connect() as conn:
        return {row.tag for row in conn.execute(query)}
