"""Everything that differs between PostgreSQL (production) and SQLite (the embedded mode), in one place.

- the database's clock, for times that hosts compare with each other (claim leases): an API, a beat
  and several workers each have their own clock, and a lease written from one host's clock and checked
  against another's would be shorter or longer than configured. SQLite is one host by design; there
  it is the same clock, at millisecond resolution in the text format the rows are stored in;
- ``INSERT … ON CONFLICT DO NOTHING``, ``greatest`` (SQLite's two-argument ``max``);
- the UTC hour a timestamp falls in (``utc_hour``), for per-hour counts;
- whether several writes can be one statement (PostgreSQL's data-modifying CTEs): the delivery steps
  then cost one round trip, and on SQLite they are two statements in one transaction;
- the sweep's lock: a PostgreSQL advisory lock; on SQLite ``BEGIN IMMEDIATE`` serialises writers.
"""

from __future__ import annotations

from sqlalchemy import Connection, Float, Table, bindparam, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement, GenericFunction

from certctl_notify.model import UTCDateTime

#: Key of the PostgreSQL advisory lock that keeps two sweeps from running at once.
SWEEP_LOCK_KEY = 0x6365_7274_6E74  # "certnt"

_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now'{})"


class db_now(FunctionElement):  # noqa: N801 (an SQL function, named like one)
    """The database's current time."""

    type = UTCDateTime()
    name = "db_now"
    inherit_cache = True


class db_now_plus(FunctionElement):  # noqa: N801
    """The database's current time plus the seconds bound as ``seconds_param``."""

    type = UTCDateTime()
    name = "db_now_plus"
    inherit_cache = True

    def __init__(self, seconds_param: str):
        super().__init__(bindparam(seconds_param, type_=Float()))


class utc_hour(FunctionElement):  # noqa: N801
    """The start of the UTC hour that a timestamp column falls in."""

    type = UTCDateTime()
    name = "utc_hour"
    inherit_cache = True


class greatest(GenericFunction):  # noqa: N801
    """The larger of two values."""

    inherit_cache = True


@compiles(db_now, "postgresql")
def _now_postgresql(element, compiler, **kw):
    return "now()"


@compiles(db_now, "sqlite")
def _now_sqlite(element, compiler, **kw):
    return _SQLITE_NOW.format("")


@compiles(db_now_plus, "postgresql")
def _now_plus_postgresql(element, compiler, **kw):
    return f"now() + make_interval(secs => {compiler.process(element.clauses, **kw)})"


@compiles(db_now_plus, "sqlite")
def _now_plus_sqlite(element, compiler, **kw):
    return _SQLITE_NOW.format(f", printf('%+.3f seconds', {compiler.process(element.clauses, **kw)})")


@compiles(utc_hour, "postgresql")
def _utc_hour_postgresql(element, compiler, **kw):
    # date_trunc on a timestamptz truncates in the session's TimeZone (an hour starting at :30 in
    # India); truncating the UTC wall time keeps the buckets on UTC hours whatever the session says.
    return f"date_trunc('hour', {compiler.process(element.clauses, **kw)} AT TIME ZONE 'UTC')"


@compiles(utc_hour, "sqlite")
def _utc_hour_sqlite(element, compiler, **kw):
    # UTCDateTime stores naive UTC text there, which strftime reads as UTC.
    return f"strftime('%Y-%m-%d %H:00:00', {compiler.process(element.clauses, **kw)})"


@compiles(greatest, "sqlite")
def _greatest_sqlite(element, compiler, **kw):
    return f"max{compiler.process(element.clause_expr, **kw)}"


def insert_ignoring_conflicts(dialect_name: str, table: Table, *columns):
    """``INSERT … ON CONFLICT (columns) DO NOTHING``: no row back means the unique key existed."""
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing(index_elements=[table.c[name] for name in columns])


def one_statement(session: Connection) -> bool:
    """True when several writes can be one statement (data-modifying CTEs), i.e. on PostgreSQL."""
    return session.dialect.name == "postgresql"


def try_sweep_lock(session: Connection) -> bool:
    """Take the sweep lock for this transaction; False when another sweep holds it.

    PostgreSQL: a transaction-scoped advisory lock, released at commit, so replicas of beat or of
    `certctl-notify sweep` never sweep at once. SQLite (embedded mode) has one beat and its
    ``BEGIN IMMEDIATE`` already serialises writers.
    """
    if session.dialect.name != "postgresql":
        return True
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SWEEP_LOCK_KEY}).scalar())
