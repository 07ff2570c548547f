"""A fresh PostgreSQL database for one test or one test deployment, dropped afterwards.

The machines this project is built and tested on run PostgreSQL on 127.0.0.1:5432
with trust authentication for ``postgres``; ``STAMPEDE_TEST_POSTGRES`` points
elsewhere (``host:port``). Every database made here has a name of its own
(``<prefix>_<random>``), so parallel sessions and helpers never share one.

    with FreshDatabase("stampede_state") as database:
        os.environ["STAMPEDE_STATE_URL"] = database.url
"""

from __future__ import annotations

import os
import secrets
import socket

ENV_SERVER = "STAMPEDE_TEST_POSTGRES"
USER = "postgres"


def server() -> tuple[str, int]:
    host, _, port = (os.environ.get(ENV_SERVER) or "127.0.0.1:5432").rpartition(":")
    return host or "127.0.0.1", int(port)


def postgres_problem() -> str | None:
    """Why no fresh database can be made here (None: PostgreSQL answers and psycopg2 is installed)."""
    host, port = server()
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "psycopg2 is not installed (make setup installs the runtime lock)"
    try:
        with socket.create_connection((host, port), timeout=2):
            pass
    except OSError as exc:
        return f"PostgreSQL is not reachable on {host}:{port} ({exc.strerror or exc})"
    return None


class FreshDatabase:
    """``CREATE DATABASE <prefix>_<random>`` on enter; terminate its sessions and drop it on exit."""

    def __init__(self, prefix: str = "stampede_test") -> None:
        self.name = f"{prefix}_{secrets.token_hex(4)}"
        self.host, self.port = server()

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (psycopg2)."""
        return f"postgresql+psycopg2://{USER}@{self.host}:{self.port}/{self.name}"

    def _admin(self):
        import psycopg2

        connection = psycopg2.connect(host=self.host, port=self.port, user=USER, dbname="postgres", connect_timeout=5)
        connection.autocommit = True
        return connection

    def __enter__(self) -> FreshDatabase:
        connection = self._admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            connection.close()
        return self

    def __exit__(self, *exc) -> None:
        self.drop()

    def drop(self) -> None:
        connection = self._admin()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> "
                               "pg_backend_pid()", (self.name,))
                cursor.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
        finally:
            connection.close()
