"""Engines and session factories; nothing connects at import."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

from sqlalchemy import Connection, Engine, create_engine, event

#: How long SQLite waits for another writer before failing, in seconds (embedded mode only).
SQLITE_BUSY_TIMEOUT_SECONDS = 30


def make_engine(database_url: str, **kwargs) -> Engine:
    """An engine for PostgreSQL or SQLite; SQLite gets WAL and a busy timeout so the API, worker and
    beat of the embedded mode can share one file."""
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            database_url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}, **kwargs
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):
            # Let SQLAlchemy's "begin" event open transactions itself (see below).
            dbapi_connection.isolation_level = None
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            dbapi_connection.execute("PRAGMA foreign_keys=ON")
            dbapi_connection.execute("PRAGMA synchronous=NORMAL")

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(connection):
            # A deferred transaction that reads and then writes fails at once with "database is
            # locked" when another process wrote meanwhile; taking the write lock up front makes
            # it wait for the busy timeout instead.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_engine(database_url, **kwargs)


class Transactions:
    """Opens one short transaction at a time: ``with transactions.begin() as conn:`` commits on exit
    and rolls back on an exception.

    The store runs Core statements only, so a Core `Connection` serves where an ORM Session would
    add its unit-of-work bookkeeping to every call on the delivery hot path for nothing.
    """

    def __init__(self, engine: Engine):
        self.engine = engine

    def begin(self) -> AbstractContextManager[Connection]:
        return self.engine.begin()


def make_sessions(engine: Engine) -> Transactions:
    """The transaction factory the API, workers and CLI pass down to the store."""
    return Transactions(engine)
