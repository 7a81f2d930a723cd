"""CERTCTL_DATABASE_URL as people paste it: each form connects to the real PostgreSQL with the installed
driver, a failover pair's host list is honoured, and a driver that is not installed is a one-line error."""

from __future__ import annotations

import importlib.util

import pytest
from sqlalchemy import create_engine, make_url, text

from certctl_notify.database_url import resolve
from certctl_notify.environment import load_settings
from certctl_notify.errors import ConfigError


@pytest.fixture
def pg(database_url):
    """(user@host:port, database) of the test database, to write URLs by hand."""
    url = make_url(database_url)
    return f"{url.username}@{url.host}:{url.port or 5432}", url.database


def server_port(url: str) -> int:
    engine = create_engine(resolve(url))
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT inet_server_port()")).scalar()
    finally:
        engine.dispose()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg2", "POSTGRESQL"])
def test_each_pasted_form_connects_with_the_installed_driver(pg, scheme):
    authority, database = pg
    url = resolve(f"{scheme}://{authority}/{database}")
    assert url.startswith("postgresql+psycopg2://")
    assert server_port(url) == int(authority.rsplit(":", 1)[1])


def test_a_bare_postgresql_url_from_the_environment_is_ready_to_use(pg):
    authority, database = pg
    settings = load_settings({"CERTCTL_DATABASE_URL": f"postgresql://{authority}/{database}"})
    assert make_url(settings.database_url).drivername == "postgresql+psycopg2"


def test_a_failover_pairs_host_list_skips_a_host_that_is_down(pg):
    # Given libpq's multi-host URL whose first host answers nothing (a failed primary)
    authority, database = pg
    user, _, live = authority.partition("@")
    url = f"postgresql://{user}@127.0.0.1:1,{live}/{database}?target_session_attrs=read-write&connect_timeout=2"
    # Then a connection goes to the next host, which accepts writes
    assert server_port(url) == int(live.rsplit(":", 1)[1])


def test_libpq_host_and_port_lists_in_the_query_pass_through(pg):
    authority, database = pg
    user, _, live = authority.partition("@")
    host, _, port = live.partition(":")
    url = f"postgres://{user}@/{database}?host={host},{host}&port=1,{port}&target_session_attrs=read-write"
    assert server_port(url) == int(port)


def test_target_session_attrs_reaches_libpq(pg):
    # The only server here is a primary: asking for a read-only session must be refused by libpq,
    # which shows the attribute is honoured rather than dropped
    authority, database = pg
    with pytest.raises(Exception, match="read-only"):
        server_port(f"postgresql://{authority}/{database}?target_session_attrs=read-only")


@pytest.mark.parametrize("url", ["sqlite:///var/x.sqlite", "sqlite:///:memory:"])
def test_sqlite_urls_are_kept_as_they_are(url):
    assert resolve(url) == url


def test_a_driver_that_is_not_installed_says_which_package_to_install(monkeypatch):
    # psycopg 3 made absent whatever this environment holds (tests/test_fresh_install.py meets the real
    # absence in a fresh virtualenv)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "psycopg" else find_spec(name, *args))
    with pytest.raises(ConfigError) as error:
        load_settings({"CERTCTL_DATABASE_URL": "postgresql+psycopg://u:s3cret@db/app"})
    message = str(error.value)
    assert "pip install 'psycopg[binary]'" in message and "CERTCTL_DATABASE_URL" in message
    assert "s3cret" not in message and "\n" not in message


@pytest.mark.parametrize("url, says", [("mysql://u@h/db", "only PostgreSQL"), ("db.internal/app", "not a URL"),
                                       ("postgresql+asyncpg://u@h/db", "not supported")])
def test_other_urls_are_refused_by_name(url, says):
    with pytest.raises(ConfigError, match=says):
        resolve(url)
