"""Engines and session factories; nothing connects at import."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

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


def make_sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory; callers frame each transaction with ``with sessions.begin() as s:``."""
    return sessionmaker(engine, expire_on_commit=False)
