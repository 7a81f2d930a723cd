"""Engines and session factories; nothing connects at import."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger(__name__)

T = TypeVar("T")

#: How long SQLite waits for another writer before failing, in seconds (embedded mode only).
SQLITE_BUSY_TIMEOUT_SECONDS = 30
#: A pooled PostgreSQL connection idle for longer than this is pinged before it is handed out.
#: Idle connections are the ones a server restart, an idle timeout or a firewall can have cut; a
#: connection in continuous use is not pinged (a ping is a round trip and a server transaction).
PING_AFTER_IDLE_SECONDS = 1.0

#: "The database cannot be reached right now" (down, restarting, cut off, pool exhausted): worth
#: trying again later, unlike a constraint or a programming error.
UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)


def is_unavailable(exc: BaseException) -> bool:
    return isinstance(exc, UNAVAILABLE) or bool(getattr(exc, "connection_invalidated", False))


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
    engine = create_engine(database_url, **kwargs)
    _ping_after_idle(engine, PING_AFTER_IDLE_SECONDS)
    return engine


def _ping_after_idle(engine: Engine, idle_seconds: float) -> None:
    """SQLAlchemy's ``pool_pre_ping``, limited to connections that sat idle in the pool.

    A connection that fails the ping is replaced before anyone uses it (DisconnectionError makes the
    pool reconnect). One in continuous use that dies anyway (the server restarted a moment ago) fails
    its statement, and SQLAlchemy then discards every pooled connection of that engine; the delivery
    steps and intake retry once for that case (`retry_on_disconnect`).
    """

    @event.listens_for(engine, "checkin")
    def _mark_idle(_dbapi_connection, record):
        if record is not None:
            record.info["certctl_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy):
        since = record.info.get("certctl_idle_since")
        if since is None or time.monotonic() - since <= idle_seconds:
            return  # new, or in use a moment ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise DisconnectionError(f"pooled connection failed its ping: {exc}") from exc


def retry_on_disconnect(work: Callable[[], T], what: str) -> T:
    """Run ``work`` once more when its pooled connection turned out to be dead.

    Only for work that is safe to run twice: a claim or an outcome record, guarded by the claim (if the
    first run did commit before its connection died, the second finds its guard false) or an
    intake (the second run fails on the row's primary key instead of writing it twice).
    """
    try:
        return work()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("%s: the database connection was lost (%s); retrying once on a new connection",
                    what, type(exc.orig).__name__)
        return work()


def retry_while_unavailable(work: Callable[[], T], what: str, *, until: float,
                            sleep: Callable[[float], None] = time.sleep) -> T:
    """`retry_on_disconnect`, and then keep trying while the database cannot be reached, until the
    monotonic time ``until`` (backing off from 50 ms to 2 s between tries).

    For outcome records after a send: a database restart or failover must not turn a delivered
    alert into one the sweep sends again once its claim lease runs out. Safe to run twice for the
    same reason as `retry_on_disconnect` (the claim token guards every outcome).
    """
    delay = 0.05
    while True:
        try:
            return retry_on_disconnect(work, what)
        except Exception as exc:  # classified: only "unavailable" is waited out, the rest is raised
            if not is_unavailable(exc) or time.monotonic() + delay > until:
                raise
            log.warning("%s: the database is unavailable (%s); trying again in %.2g s", what,
                        str(exc).strip().splitlines()[0][:200], delay)
            sleep(delay)
            delay = min(delay * 2, 2.0)


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

    def dispose(self, close: bool = True) -> None:
        """Drop every pooled connection; ``close=False`` in a forked child, whose parent still owns
        the sockets."""
        self.engine.dispose(close=close)


def make_sessions(database_url: str, **engine_kwargs) -> Transactions:
    """The transaction factory the API, workers and CLI pass down to the store."""
    return Transactions(make_engine(database_url, **engine_kwargs))
