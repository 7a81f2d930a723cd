"""Run the Alembic migrations from code (the CLI, start-up checks and tests); nothing here reads
the environment: the database URL is passed in."""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

import migrations
from certctl_notify.db import make_engine

#: PostgreSQL advisory lock key held while migrating, so replicas migrate one at a time
#: ("certmig"; the sweep's lock is "certnt").
MIGRATION_LOCK_KEY = 0x63_6572_746D_6967
#: The directory holding env.py and versions/ (the ``migrations`` package, wherever it is installed).
SCRIPT_LOCATION = Path(migrations.__file__).parent
# Alembic's commands install process-wide proxies (``alembic.context``, ``alembic.op``), so two
# commands in threads of one process would run on each other's connections. Processes are
# serialised by env.py's advisory lock instead.
_command_lock = threading.Lock()


def alembic_config(database_url: str) -> Config:
    """An Alembic config for ``database_url`` using the packaged migrations."""
    config = Config(str(SCRIPT_LOCATION / "alembic.ini"))
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    # ConfigParser interpolates "%": a URL-encoded password must survive it.
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade the database to ``revision``; at the target already, this does nothing."""
    with _command_lock:
        command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Downgrade the database to ``revision`` (``"base"`` drops everything the migrations made)."""
    with _command_lock:
        command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def is_at_head(database_url: str) -> bool:
    """True when the database is at the newest revision (alembic cookbook.rst)."""
    heads = set(ScriptDirectory.from_config(alembic_config(database_url)).get_heads())
    engine = make_engine(database_url)
    try:
        with engine.connect() as connection:
            return set(MigrationContext.configure(connection).get_current_heads()) == heads
    finally:
        engine.dispose()
