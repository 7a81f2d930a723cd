"""Alembic environment: online only, one transaction per revision, and on PostgreSQL one migrator
at a time, so every replica may run ``upgrade head`` at start-up.

A caller may pass its own connection in ``config.attributes["connection"]``. If that connection is
inside a transaction, every revision runs in it and the caller commits.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

from alembic import context
from sqlalchemy import Connection, pool, text

from certctl_notify.db import make_engine
from certctl_notify.migrate import MIGRATION_LOCK_KEY
from certctl_notify.model import Base

#: Longest wait for a table lock during DDL, so a long query blocks a migration briefly, not the app.
LOCK_TIMEOUT = "10s"
#: Longest single statement, also the longest wait for another replica's migration to finish.
STATEMENT_TIMEOUT = "5min"

target_metadata = Base.metadata


@contextmanager
def _postgresql_migration_lock(connection: Connection, *, in_caller_transaction: bool) -> Iterator[None]:
    """Serialise migrators, and bound how long DDL waits for locks and runs.

    Normally a session-level lock held across all the per-revision transactions: a transaction-
    level lock would be released after the first revision, while the other replica, having read
    the old version before it, would then run the same revisions again. In a caller's transaction
    everything runs in that one transaction, so the transaction-level lock is the right one.
    """
    scope = "LOCAL " if in_caller_transaction else ""
    connection.exec_driver_sql(f"SET {scope}statement_timeout = '{STATEMENT_TIMEOUT}'")
    lock = "pg_advisory_xact_lock" if in_caller_transaction else "pg_advisory_lock"
    connection.execute(text(f"SELECT {lock}(:key)"), {"key": MIGRATION_LOCK_KEY})
    # Set after taking the lock: waiting for another replica's migration is not a lock timeout.
    connection.exec_driver_sql(f"SET {scope}lock_timeout = '{LOCK_TIMEOUT}'")
    if in_caller_transaction:
        yield
        return
    connection.commit()
    try:
        yield
    finally:
        # Every revision committed in its own transaction; what is still open is a read of the
        # version table, or what a failed revision left behind.
        connection.rollback()
        connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.exec_driver_sql("RESET lock_timeout")
        connection.exec_driver_sql("RESET statement_timeout")
        connection.commit()


@contextmanager
def _sqlite_foreign_keys_off(connection: Connection) -> Iterator[None]:
    """Turn SQLite's foreign keys off while migrating, and check them afterwards.

    Batch mode rebuilds a table by copying it and dropping the original; with foreign keys on,
    dropping notification_events would cascade-delete every notification_attempts row. The pragma
    only works outside a transaction, so it goes straight to the driver (make_engine's engines
    begin each SQLAlchemy transaction with BEGIN IMMEDIATE).
    """
    driver = connection.connection.driver_connection
    was_on = driver.execute("PRAGMA foreign_keys").fetchone()[0]
    driver.execute("PRAGMA foreign_keys = OFF")
    try:
        yield
        connection.rollback()
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
        if broken:
            raise RuntimeError(f"the migration left rows that break foreign keys: {broken[:5]}")
    finally:
        connection.rollback()
        driver.execute(f"PRAGMA foreign_keys = {'ON' if was_on else 'OFF'}")


def run_migrations(connection: Connection) -> None:
    dialect = connection.dialect.name
    in_caller_transaction = connection.in_transaction()
    if dialect == "postgresql":
        guard = _postgresql_migration_lock(connection, in_caller_transaction=in_caller_transaction)
    elif dialect == "sqlite" and not in_caller_transaction:
        guard = _sqlite_foreign_keys_off(connection)
    else:
        guard = nullcontext()
    with guard:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            transaction_per_migration=True,
            render_as_batch=dialect == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = make_engine(context.config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run_migrations(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: the revisions inspect the live schema")
run_migrations_online()
