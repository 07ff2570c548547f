"""The run tags Stampede issued: the only tags the reaper may ever delete data for.

Preflight issues a run's tag (every entity the run creates carries it); the
run's end marks it ended. The reaper deletes only entities that carry, as a
whole token, a tag issued here that has ended: never by a pattern alone (a
postcode such as ``LT-01103`` looks like a tag and belongs to no run).
"""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Column, String, Table, select, update
from sqlalchemy.exc import IntegrityError

from stampede.state import db

run_tags = Table(
    "stampede_run_tags", db.metadata,
    Column("tag", String(120), primary_key=True),
    Column("run_id", String(250), nullable=False),
    Column("dag_id", String(250), nullable=False, default=""),
    Column("target", String(500), nullable=False, default=""),
    Column("issued_at", String(40), nullable=False),
    Column("ended_at", String(40)),
)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def issue(tag: str, *, run_id: str, dag_id: str = "", target: str = "") -> None:
    """Record ``tag`` as issued to ``run_id`` (idempotent for the same run; a clash raises ``ValueError``)."""
    engine = db.engine(tables=(run_tags,))
    with engine.begin() as conn:
        row = conn.execute(select(run_tags.c.run_id).where(run_tags.c.tag == tag)).first()
        if row is not None:
            if row.run_id != run_id:
                raise ValueError(f"run tag {tag} was issued to run {row.run_id}, not {run_id}")
            return
        try:
            conn.execute(run_tags.insert().values(tag=tag, run_id=run_id, dag_id=dag_id, target=target,
                                                  issued_at=_now()))
        except IntegrityError:  # a concurrent preflight of the same run issued it first
            pass


def end(tag: str) -> None:
    """The run that carries ``tag`` is over (idempotent): from now on the reaper may clean up after it."""
    engine = db.engine(tables=(run_tags,))
    with engine.begin() as conn:
        conn.execute(update(run_tags).where(run_tags.c.tag == tag, run_tags.c.ended_at.is_(None)).values(ended_at=_now()))


def issued(*, ended: bool | None = None) -> set[str]:
    """Every issued tag (``ended=True``: only those of runs that are over; ``False``: only running ones)."""
    engine = db.engine(tables=(run_tags,))
    query = select(run_tags.c.tag)
    if ended is True:
        query = query.where(run_tags.c.ended_at.is_not(None))
    elif ended is False:
        query = query.where(run_tags.c.ended_at.is_(None))
    with engine.connect() as conn:
        return {row.tag for row in conn.execute(query)}
