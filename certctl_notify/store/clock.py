"""The database's clock, for times that hosts compare with each other (claim leases).

An API, a beat and several workers on different hosts each have their own clock; a lease written from
one host's clock and checked against another's is shorter or longer than configured. These
expressions read the one clock every host shares, inside the statement that writes or compares.
SQLite (the embedded mode) is one host by design; there it is the same clock, at millisecond
resolution in the text format the rows are stored in.
"""

from __future__ import annotations

from sqlalchemy import Float, bindparam
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from certctl_notify.model import UTCDateTime

_SQLITE_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now'{})"


class db_now(FunctionElement):  # noqa: N801 (an SQL function, named like one)
    """The database's current time."""

    type = UTCDateTime()
    name = "db_now"
    inherit_cache = True


class db_now_plus(FunctionElement):  # noqa: N801
    """The database's current time plus the bound number of seconds ``seconds_param``."""

    type = UTCDateTime()
    name = "db_now_plus"
    inherit_cache = True

    def __init__(self, seconds_param: str):
        super().__init__(bindparam(seconds_param, type_=Float()))


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
