"""The Alembic revisions against real PostgreSQL and SQLite: from empty, from the original service's
schema with rows, twice in a row, down and up again, and two replicas at once.

"Matches the models" is checked twice: Alembic's ``compare_metadata`` (columns, types, defaults),
and a reflected snapshot compared with ``create_all`` of model.py, which also covers what
``compare_metadata`` ignores: constraint names, CHECK constraints and partial-index predicates.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from certctl_notify import migrate
from certctl_notify.db import make_engine
from certctl_notify.model import Base

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAD = "0012_filter_indexes"
ORIGINAL_SERVICE_TABLES = {"managed_certificates"}

ORIGINAL_SCHEMA = """
CREATE TABLE managed_certificates (id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS notification_events (
  id TEXT PRIMARY KEY,
  type VARCHAR(255) NOT NULL,
  certificate_id TEXT REFERENCES managed_certificates(id) ON DELETE CASCADE,
  channel VARCHAR(255) NOT NULL,
  recipient VARCHAR(255) NOT NULL,
  message TEXT NOT NULL,
  sent_at TIMESTAMPTZ,
  status VARCHAR(50) NOT NULL DEFAULT 'pending',
  error TEXT
);
CREATE INDEX IF NOT EXISTS idx_notification_events_certificate_id ON notification_events(certificate_id);
CREATE INDEX IF NOT EXISTS idx_notification_events_status ON notification_events(status);
CREATE INDEX IF NOT EXISTS idx_notification_events_type ON notification_events(type);
"""
MIGRATION_000016 = """
ALTER TABLE notification_events ADD COLUMN IF NOT EXISTS retry_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE notification_events ADD COLUMN IF NOT EXISTS next_retry_at TIMESTAMPTZ;
ALTER TABLE notification_events ADD COLUMN IF NOT EXISTS last_error TEXT;
CREATE INDEX IF NOT EXISTS idx_notification_events_retry_sweep
  ON notification_events(next_retry_at)
  WHERE status = 'failed' AND next_retry_at IS NOT NULL;
"""
ORIGINAL_ROWS = """
INSERT INTO managed_certificates VALUES ('mc-1');
INSERT INTO notification_events
  (id, type, certificate_id, channel, recipient, message, sent_at, status, error)
VALUES
  ('n-sent-sentinel', 'RenewalSuccess', 'mc-1', 'Email', 'ops@example.com', 'renewed',
   '0001-01-01 00:00:00+00', 'sent', NULL),
  ('n-sent', 'ExpirationWarning', 'mc-1', 'Webhook', 'https://hooks.example.com', 'expires soon',
   '2024-05-01 10:00:00+00', 'sent', NULL),
  ('n-pending', 'ExpirationWarning', NULL, 'Slack', '', 'expires soon', NULL, 'pending', NULL),
  ('n-failed', 'RenewalFailure', 'mc-1', 'Email', 'ops@example.com', 'renewal failed',
   '0001-01-01 00:00:00+00', 'failed', 'smtp: connection refused'),
  ('n-bogus', 'Revocation', NULL, 'Email', 'ops@example.com', 'revoked', NULL, 'bogus', NULL);
"""
ROWS_000016 = """
INSERT INTO notification_events
  (id, type, channel, recipient, message, status, error, retry_count, next_retry_at, last_error)
VALUES
  ('n-retrying', 'RenewalFailure', 'Webhook', 'https://hooks.example.com', 'renewal failed', 'failed',
   'older', 2, '2030-01-01 00:00:00+00', 'HTTP 503'),
  ('n-dead', 'RenewalFailure', 'Email', 'ops@example.com', 'renewal failed', 'dead',
   NULL, 5, NULL, 'gave up');
"""
MINIMAL_ROW = (
    "INSERT INTO notification_events (id, type, channel, message) VALUES ('n1', 'Revocation', 'Email', 'm')"
)
# Not in the original service; 0003 must keep the values and make the column NOT NULL.
CREATED_AT_COLUMN = """
ALTER TABLE notification_events ADD COLUMN created_at TIMESTAMPTZ;
UPDATE notification_events SET created_at = '2024-01-02 03:04:05+00' WHERE id = 'n-sent';
"""


@pytest.fixture
def pg_url(new_database):
    return new_database("postgresql")


@pytest.fixture(params=["postgresql", "sqlite"])
def url(request, new_database):
    return new_database(request.param)


def run_sql(url: str, script: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        for statement in filter(str.strip, script.split(";")):
            conn.exec_driver_sql(statement)
    engine.dispose()


def dialect_of(url: str) -> str:
    return sa.make_url(url).get_backend_name()


def table_names(url: str) -> set[str]:
    engine = make_engine(url)
    with engine.connect() as conn:
        names = set(sa.inspect(conn).get_table_names())
    engine.dispose()
    return names


def query(url: str, sql: str, **params) -> list[sa.Row]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(sql), params).all()
    engine.dispose()
    return rows


OPTIONAL_TRIGRAM_INDEX = "idx_notification_events_last_error_trgm"


def schema_diff(url: str) -> list:
    """What Alembic's autogenerate would change to reach model.py (empty when they agree)."""

    def ours(name, type_, _parent_names):
        # the trigram index exists only where pg_trgm could be created (0012): not in the model
        return not (type_ == "table" and name in ORIGINAL_SERVICE_TABLES) and name != OPTIONAL_TRIGRAM_INDEX

    engine = make_engine(url)
    opts = {"compare_type": True, "compare_server_default": True, "include_name": ours}
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata)
    engine.dispose()
    if url.startswith("sqlite"):
        # Alembic's SQLite default comparison strips quotes only from non-empty literals, so it
        # sees the model's '' and the reflected "''" as different (test_defaults checks the value).
        diff = [
            d
            for d in diff
            if not (isinstance(d, list) and d[0][0] == "modify_default" and d[0][3] == "recipient")
        ]
    return diff


def snapshot(url: str) -> dict:
    """Every table's columns, constraints and indexes as reflected, names and predicates included."""
    engine = make_engine(url)
    result = {}
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        for table in set(inspector.get_table_names()) - {"alembic_version"} - ORIGINAL_SERVICE_TABLES:
            pk = inspector.get_pk_constraint(table)
            result[table] = {
                "columns": {
                    c["name"]: (str(c["type"].compile(dialect=conn.dialect)), c["nullable"], c["default"])
                    for c in inspector.get_columns(table)
                },
                "pk": (pk["name"], pk["constrained_columns"]),
                "fks": sorted(
                    (
                        fk["name"],
                        fk["constrained_columns"],
                        fk["referred_table"],
                        fk["options"].get("ondelete"),
                    )
                    for fk in inspector.get_foreign_keys(table)
                ),
                "unique": sorted(
                    (u["name"], u["column_names"]) for u in inspector.get_unique_constraints(table)
                ),
                "checks": sorted((c["name"], c["sqltext"]) for c in inspector.get_check_constraints(table)),
                "indexes": sorted(
                    (
                        i["name"],
                        i["column_names"],
                        i["unique"],
                        sorted((k, str(v)) for k, v in i.get("dialect_options", {}).items()),
                    )
                    for i in inspector.get_indexes(table) if i["name"] != OPTIONAL_TRIGRAM_INDEX
                ),
            }
    engine.dispose()
    return result


def model_snapshot(new_database, dialect: str) -> dict:
    url = new_database(dialect)
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    engine.dispose()
    return snapshot(url)


def test_upgrade_from_empty_matches_the_models(url, new_database):
    # Given an empty database
    # When it is upgraded to head
    migrate.upgrade(url)
    # Then it is at head, and the schema is model.py's, down to constraint names and predicates
    assert migrate.current(url) == HEAD
    assert schema_diff(url) == []
    assert snapshot(url) == model_snapshot(new_database, dialect_of(url))


def test_defaults(url):
    # Given a database at head
    migrate.upgrade(url)
    # When a row is inserted with only the required columns
    run_sql(url, MINIMAL_ROW)
    # Then the server defaults fill in the rest
    [row] = query(
        url,
        "SELECT recipient, severity, status, retry_count, created_at, updated_at FROM notification_events",
    )
    assert row[:4] == ("", "warning", "pending", 0)
    assert row.created_at is not None and row.updated_at is not None


def test_upgrade_head_twice_is_a_noop(url, caplog):
    # Given a database at head, with a row
    migrate.upgrade(url)
    run_sql(url, MINIMAL_ROW)
    before = snapshot(url)
    # When upgrade head runs again
    with caplog.at_level(logging.INFO, logger="alembic.runtime.migration"):
        migrate.upgrade(url)
    # Then no revision ran and nothing changed
    assert not [r for r in caplog.records if r.getMessage().startswith("Running upgrade")]
    assert snapshot(url) == before
    assert query(url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert query(url, "SELECT id FROM notification_events") == [("n1",)]


def test_is_at_head(pg_url):
    # Given a fresh database, Then it is not at head
    assert migrate.current(pg_url) is None
    assert not migrate.is_at_head(pg_url)
    # When it is upgraded part way, Then it is still not at head
    migrate.upgrade(pg_url, "0002_retry_columns")
    assert not migrate.is_at_head(pg_url)
    # When it is upgraded to head, Then it is
    migrate.upgrade(pg_url)
    assert migrate.is_at_head(pg_url)


def test_revisions_0001_0002_reproduce_the_original_schema(new_database):
    # Given the original service's schema with 000016, made by its own SQL (less the foreign key
    # to a table this service does not have)
    original = new_database("postgresql")
    run_sql(
        original,
        (ORIGINAL_SCHEMA + MIGRATION_000016).replace(
            " REFERENCES managed_certificates(id) ON DELETE CASCADE", ""
        ),
    )
    # When an empty database is upgraded to 0002
    ours = new_database("postgresql")
    migrate.upgrade(ours, "0002_retry_columns")
    # Then the two are identical
    assert snapshot(ours) == snapshot(original)


@pytest.mark.parametrize("variant", ["original", "original+000016", "original+000016+created_at"])
def test_upgrade_from_the_original_schema_keeps_and_cleans_rows(pg_url, new_database, variant):
    # Given a database of the original service (never stamped by Alembic), with rows
    script = ORIGINAL_SCHEMA + ORIGINAL_ROWS
    if "000016" in variant:
        script += MIGRATION_000016 + ROWS_000016
    if "created_at" in variant:
        script += CREATED_AT_COLUMN
    run_sql(pg_url, script)
    ids = {r.id for r in query(pg_url, "SELECT id FROM notification_events")}

    # When it is upgraded to head
    migrate.upgrade(pg_url)

    # Then the schema is model.py's
    assert migrate.is_at_head(pg_url)
    assert schema_diff(pg_url) == []
    assert snapshot(pg_url) == model_snapshot(new_database, "postgresql")
    # And every row survived, with the new columns' defaults
    rows = {r.id: r for r in query(pg_url, "SELECT * FROM notification_events")}
    assert set(rows) == ids
    for row in rows.values():
        assert row.severity == "warning" and row.created_at is not None and row.updated_at is not None
        assert row.lease_owner is None and row.dedupe_key is None
    assert rows["n-pending"].retry_count == 0
    # And sentinel sent_at values are gone (the real delivery time is unknown), real ones kept
    assert rows["n-sent-sentinel"].status == "sent" and rows["n-sent-sentinel"].sent_at is None
    assert rows["n-sent"].sent_at == datetime(2024, 5, 1, 10, tzinfo=UTC)
    assert rows["n-failed"].sent_at is None
    # And a failed row the original never scheduled for retry (a silently dropped alert) is now a
    # dead letter that says so and keeps the original error
    assert rows["n-failed"].status == "dead"
    assert rows["n-failed"].last_error == (
        "migrated: failed in the original service and never retried; requeue to send;"
        " last error: smtp: connection refused"
    )
    # And an unknown status became a dead letter that says why
    assert rows["n-bogus"].status == "dead"
    assert rows["n-bogus"].last_error == "migrated: unknown original status bogus"
    # And rows still to be delivered have a dispatch clock; delivered ones do not
    assert rows["n-pending"].dispatched_at == rows["n-pending"].created_at
    assert rows["n-failed"].dispatched_at is None
    assert rows["n-sent"].dispatched_at is None
    if "000016" in variant:
        assert rows["n-retrying"].last_error == "HTTP 503" and rows["n-retrying"].retry_count == 2
        assert rows["n-dead"].status == "dead" and rows["n-dead"].last_error == "gave up"
    if "created_at" in variant:
        assert rows["n-sent"].created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    # And the CHECK constraint refuses an unknown status
    engine = make_engine(pg_url)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql("UPDATE notification_events SET status = 'nonsense' WHERE id = 'n-sent'")
    engine.dispose()


def test_downgrade_and_upgrade_again(url, new_database):
    # Given a database at head with a failed row waiting for its retry
    migrate.upgrade(url)
    run_sql(
        url,
        "INSERT INTO notification_events (id, type, channel, recipient, message, status, retry_count,"
        " last_error, next_retry_at) VALUES ('n1', 'RenewalFailure', 'Email', 'ops@example.com', 'm',"
        " 'failed', 2, 'boom', CURRENT_TIMESTAMP)",
    )

    # When it is downgraded to 0002
    migrate.downgrade(url, "0002_retry_columns")
    # Then it has the 0002 shape, and the row is kept with its error in the original column
    at_0002 = new_database(dialect_of(url))
    migrate.upgrade(at_0002, "0002_retry_columns")
    assert snapshot(url) == snapshot(at_0002)
    assert query(url, "SELECT id, status, retry_count, error, last_error FROM notification_events") == [
        ("n1", "failed", 2, "boom", "boom")
    ]

    # When it is upgraded to head again
    migrate.upgrade(url)
    # Then it matches the models and still has the row
    assert migrate.is_at_head(url)
    assert schema_diff(url) == []
    assert query(url, "SELECT id, last_error FROM notification_events") == [("n1", "boom")]

    # When it is downgraded to base, Then only Alembic's own table is left
    migrate.downgrade(url, "base")
    assert table_names(url) == {"alembic_version"}
    assert migrate.current(url) is None
    # When it is upgraded once more, Then it is at head and matches the models
    migrate.upgrade(url)
    assert migrate.current(url) == HEAD
    assert schema_diff(url) == []


KEYED_ROWS = """
INSERT INTO notification_events (id, type, channel, recipient, message, status, dedupe_key) VALUES
  ('n-multi-w', 'Revocation', 'Webhook', '', 'm', 'sent', 'k1:Webhook'),
  ('n-multi-s', 'Revocation', 'Slack', '', 'm', 'sent', 'k1:Slack'),
  ('n-single', 'Revocation', 'Webhook', '', 'm', 'sent', 'k2'),
  ('n-dup', 'Revocation', 'Webhook', '', 'm', 'sent', 'k2:Webhook'),
  ('n-other', 'Revocation', 'Slack', '', 'm', 'sent', 'k3:Webhook'),
  ('n-bare', 'Revocation', 'Email', 'a@b.c', 'm', 'sent', ':Email')
"""


def test_dedupe_keys_become_per_channel_and_keep_their_meaning(url):
    # Given rows keyed the old way: a several-channel alert's "<key>:<Channel>" rows, the duplicate the
    # old scheme let through ("k2" and "k2:Webhook" on Webhook), and a key naming another channel
    migrate.upgrade(url, "0004_operator_tables")
    run_sql(url, KEYED_ROWS)
    # When it is upgraded
    migrate.upgrade(url)
    # Then a several-channel row carries the bare key, the duplicate keeps its suffix (the bare key
    # is taken on its channel), and keys not ending in their own channel are left alone
    keys = dict(query(url, "SELECT id, dedupe_key FROM notification_events"))
    assert keys == {"n-multi-w": "k1", "n-multi-s": "k1", "n-single": "k2", "n-dup": "k2:Webhook",
                    "n-other": "k3:Webhook", "n-bare": ":Email"}
    # And one key may now name one row per channel, but never two rows of one channel
    run_sql(url, "INSERT INTO notification_events (id, type, channel, message, dedupe_key)"
                 " VALUES ('n-new', 'Revocation', 'Email', 'm', 'k1')")
    with pytest.raises(sa.exc.IntegrityError):
        run_sql(url, "INSERT INTO notification_events (id, type, channel, message, dedupe_key)"
                     " VALUES ('n-again', 'Revocation', 'Email', 'm', 'k1')")
    # When it is downgraded, Then keys shared across channels get their channel back (unique alone)
    migrate.downgrade(url, "0004_operator_tables")
    keys = dict(query(url, "SELECT id, dedupe_key FROM notification_events"))
    assert (keys["n-multi-w"], keys["n-multi-s"], keys["n-new"]) == ("k1:Webhook", "k1:Slack", "k1:Email")
    assert keys["n-single"] == "k2"


def test_two_replicas_upgrading_at_once_both_succeed(pg_url):
    # Two processes, as replicas are: Alembic's `context` and `op` are module-level proxies, so two
    # migrations in threads of one process would drive each other's connections.
    # Given a fresh database whose migration lock is held, so that both replicas must queue on it
    holder_engine = make_engine(pg_url)
    holder = holder_engine.connect()
    holder.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": migrate.MIGRATION_LOCK_KEY})
    holder.commit()
    code = "import sys; from certctl_notify.migrate import upgrade; upgrade(sys.argv[1])"
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", code, pg_url], cwd=REPO_ROOT, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            waiting = holder.execute(
                sa.text(
                    "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
                    " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()"
                )
            ).scalar()
            holder.rollback()
            if waiting == 2 or any(r.poll() is not None for r in replicas):
                break
            time.sleep(0.05)
        assert waiting == 2, "both replicas should be waiting for the migration lock"
        # When the lock is released, both run `upgrade head`
        holder.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": migrate.MIGRATION_LOCK_KEY})
        holder.commit()
        errors = [r.communicate(timeout=60)[1] for r in replicas]
    finally:
        for replica in replicas:
            if replica.poll() is None:
                replica.kill()
                replica.wait()
        holder.close()
        holder_engine.dispose()
    # Then both succeed, and the database is at head exactly once
    assert [r.returncode for r in replicas] == [0, 0], errors
    assert migrate.is_at_head(pg_url)
    assert query(pg_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert schema_diff(pg_url) == []


def test_two_threads_upgrading_at_once_both_succeed(pg_url):
    # Given a fresh database
    errors: list[BaseException] = []

    def upgrade() -> None:
        try:
            migrate.upgrade(pg_url)
        except BaseException as exc:  # collected and asserted on below
            errors.append(exc)

    # When two threads, each with its own engine, run upgrade head at once (migrate serialises
    # them: Alembic's commands are not thread-safe)
    threads = [threading.Thread(target=upgrade) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
        assert not thread.is_alive()
    # Then both succeed and the database is at head exactly once
    assert errors == []
    assert query(pg_url, "SELECT version_num FROM alembic_version") == [(HEAD,)]
    assert schema_diff(pg_url) == []


REBUILD_REVISION = """
from alembic import op

revision = "9999_rebuild"
down_revision = "%s"


def upgrade():
    with op.batch_alter_table("notification_events", recreate="always"):
        pass
"""

ATTEMPT_ROW = (
    "INSERT INTO notification_attempts (notification_id, attempt, started_at) VALUES ('n1', 1, '2024-01-01')"
)


def test_sqlite_table_rebuild_keeps_the_rows_that_reference_it(new_database, tmp_path):
    # Given the migrations plus a later revision that rebuilds notification_events (what SQLite's
    # batch mode does for most ALTERs), and a database at 0003 with an event and its attempt
    scripts = tmp_path / "scripts"
    shutil.copytree(migrate.SCRIPT_LOCATION, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    (scripts / "versions" / "9999_rebuild.py").write_text(REBUILD_REVISION % HEAD)
    url = new_database("sqlite")
    config = migrate.alembic_config(url)
    config.set_main_option("script_location", str(scripts))
    command.upgrade(config, HEAD)
    run_sql(url, MINIMAL_ROW)
    run_sql(url, ATTEMPT_ROW)
    # When the rebuild runs (dropping the original table, which the attempts reference)
    command.upgrade(config, "head")
    # Then the attempt is still there: foreign keys were off during the migration
    assert query(url, "SELECT notification_id FROM notification_attempts") == [("n1",)]
