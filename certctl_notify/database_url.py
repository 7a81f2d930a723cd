"""``CERTCTL_DATABASE_URL`` as people paste it, turned into a SQLAlchemy URL for a driver that is installed.

SQLAlchemy maps a bare ``postgresql://`` to psycopg 3, which this package does not install; Heroku-style
``postgres://`` it does not know at all; and libpq's multi-host form (``postgresql://u@a:5432,b:5432/db``)
it cannot parse. All three are what a first set-up pastes, so they are read here once, at start-up:

- ``postgresql://`` and ``postgres://`` use psycopg2 (installed with this package);
- ``postgresql+<driver>://`` keeps the named driver, which must be importable;
- several hosts in the authority become SQLAlchemy's ``?host=a:5432&host=b:5432``, which psycopg2 hands
  to libpq as its host list; libpq's own ``?host=a,b&port=…`` form and parameters such as
  ``target_session_attrs=read-write`` pass through untouched;
- ``sqlite:///…`` (the embedded mode) is kept as it is.
"""

from __future__ import annotations

import importlib.util
from urllib.parse import parse_qsl, urlencode

from certctl_notify.errors import ConfigError

#: The driver a URL without one gets: installed with this package.
DEFAULT_POSTGRES_DRIVER = "psycopg2"
#: Synchronous PostgreSQL drivers SQLAlchemy supports: driver name → (module imported, package to install).
POSTGRES_DRIVERS = {
    "psycopg2": ("psycopg2", "psycopg2-binary"),
    "psycopg": ("psycopg", "psycopg[binary]"),
    "pg8000": ("pg8000", "pg8000"),
}
_POSTGRES_SCHEMES = {"postgres", "postgresql"}
_SQLITE_SCHEMES = {"sqlite", "sqlite+pysqlite"}


def resolve(url: str, *, name: str = "CERTCTL_DATABASE_URL") -> str:
    """The SQLAlchemy URL to connect with.

    Raises:
        ConfigError: naming ``name`` (never the password) when the URL is not a PostgreSQL or SQLite
            URL, or names a driver that is not installed (saying which package to install).
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme:
        raise ConfigError(f"{name} is not a URL (expected postgresql://user@host/database or sqlite:///path)")
    scheme = scheme.lower()
    if scheme in _SQLITE_SCHEMES:
        return url
    dialect, _, driver = scheme.partition("+")
    if dialect not in _POSTGRES_SCHEMES:
        raise ConfigError(f"{name} uses {dialect!r}: only PostgreSQL (postgresql://…) and, for the embedded "
                          "mode, SQLite (sqlite:///…) are supported")
    driver = driver or DEFAULT_POSTGRES_DRIVER
    _require_driver(driver, name)
    return f"postgresql+{driver}://{_hosts_in_query(rest)}"


def _require_driver(driver: str, name: str) -> None:
    if driver not in POSTGRES_DRIVERS:
        known = ", ".join(sorted(POSTGRES_DRIVERS))
        raise ConfigError(f"{name} names the PostgreSQL driver {driver!r}, which is not supported "
                          f"(use one of {known}, or postgresql:// for {DEFAULT_POSTGRES_DRIVER})")
    module, package = POSTGRES_DRIVERS[driver]
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{name} names the PostgreSQL driver {driver!r}, which is not installed: "
                          f"pip install '{package}', or write postgresql:// to use {DEFAULT_POSTGRES_DRIVER}, "
                          "which is")


def _hosts_in_query(rest: str) -> str:
    """``user@a:1,b:2/db?x=y`` → ``user@/db?x=y&host=a:1&host=b:2``; one host is left as it is."""
    authority, _, path = rest.partition("/")
    userinfo, at, hostlist = authority.rpartition("@")
    if "," not in hostlist:
        return rest
    path, _, query = path.partition("?")
    hosts = [("host", host) for host in hostlist.split(",") if host]
    params = parse_qsl(query, keep_blank_values=True) + hosts
    return f"{userinfo}{at}/{path}?{urlencode(params, safe=':[]')}"
