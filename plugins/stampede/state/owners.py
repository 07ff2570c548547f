"""Who owns each run's load, in the shared state: the owner's last beat and the master it plays on.

The run folder's ``owner.json`` and ``master.json`` (``stampede.load.owner``) are
what the load processes on the master's host read; this row is the same facts
for the other hosts of a deployment: a retried ``run_stages`` on another Celery
worker learns that the run already has a master (and must not send the load
again), and cleanup or teardown on another host learns whether load may still
flow (a beat within its grace) or is proved over by the rule (every load
process stops itself once the beat is older than the grace).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Boolean, Column, Float, String, Table, Text, select, update
from sqlalchemy.dialects import postgresql, sqlite

from stampede.state import db

__all__ = ["beat", "get", "record_master"]

load_owners = Table(
    "stampede_load_owners", db.metadata,
    Column("run_tag", String(120), primary_key=True),
    Column("owner", String(250), nullable=False),  # host:pid of the process that beats
    Column("beat_at", Float, nullable=False),  # epoch, the owner's clock
    Column("grace_s", Float, nullable=False),
    Column("ended", Text),  # why the owner ended the load on purpose; NULL while it runs
    Column("master_ended", Boolean, nullable=False, default=False),  # the owner saw the master exit
    Column("master", Text),  # the checkpoint (JSON): host, pid, port, started_at of the master
)
TABLES = (load_owners,)


def beat(run_tag: str, *, owner: str, beat_at: float, grace_s: float, ended: str | None = None,
         master_ended: bool = False) -> None:
    """Record the owner's beat (an upsert: the first beat creates the row, a takeover overwrites the owner)."""
    engine = db.engine(tables=TABLES)
    values = {"run_tag": run_tag, "owner": owner, "beat_at": beat_at, "grace_s": grace_s, "ended": ended,
              "master_ended": master_ended}
    insert = (postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert)(load_owners).values(values)
    statement = insert.on_conflict_do_update(index_elements=["run_tag"],
                                             set_={k: v for k, v in values.items() if k != "run_tag"})
    with engine.begin() as conn:
        conn.execute(statement)


def record_master(run_tag: str, checkpoint: dict[str, Any]) -> None:
    with db.engine(tables=TABLES).begin() as conn:
        conn.execute(update(load_owners).where(load_owners.c.run_tag == run_tag)
                     .values(master=json.dumps(checkpoint)))


def get(run_tag: str) -> dict[str, Any] | None:
    """The row of ``run_tag`` (``master`` decoded), or None when the run never had an owner."""
    with db.engine(tables=TABLES).connect() as conn:
        row = conn.execute(select(load_owners).where(load_owners.c.run_tag == run_tag)).mappings().first()
    if row is None:
        return None
    found = dict(row)
    found["master"] = json.loads(found["master"]) if found.get("master") else None
    return found
