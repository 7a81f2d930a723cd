"""Counts per status maintained as rows change, so reading them costs nothing whatever the table's size.

Revision ID: 0008_status_counts
Revises: 0007_attempts_finished_index
Create Date: 2026-12-03

Triggers on notification_events keep the counts, so no code path can forget them, and a transaction
that rolls back (a worker killed mid-transition included) rolls its counting back with it.

PostgreSQL: statement-level triggers append one delta row per status a statement changed to
notification_status_deltas. Appending takes no row lock, so concurrent workers never queue or deadlock
on a counter row; the base table notification_status_counts absorbs the deltas when beat folds them
(store.counts.fold_deltas), and a read sums base and deltas in one snapshot, which is exact.
SQLite (one writer at a time) updates notification_status_counts directly from row-level triggers.
TRUNCATE (the tests empty tables with it) resets the counts.

The first count is taken under a SHARE lock on notification_events, which holds off writers for one
scan of the table: upgrade at a quiet time on a large table.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_status_counts"
down_revision = "0007_attempts_finished_index"
branch_labels = None
depends_on = None

_STATUSES = ("pending", "sent", "failed", "dead", "read")

_PG_FUNCTIONS = """
CREATE FUNCTION certctl_count_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO notification_status_deltas (status, n)
  SELECT status, count(*) FROM new_rows GROUP BY status;
  RETURN NULL;
END $$;

CREATE FUNCTION certctl_count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO notification_status_deltas (status, n)
  SELECT status, -count(*) FROM old_rows GROUP BY status;
  RETURN NULL;
END $$;

CREATE FUNCTION certctl_count_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO notification_status_deltas (status, n)
  SELECT status, sum(n) FROM (
    SELECT o.status, -1 AS n FROM old_rows o JOIN new_rows w ON w.id = o.id WHERE w.status <> o.status
    UNION ALL
    SELECT w.status, 1 AS n FROM old_rows o JOIN new_rows w ON w.id = o.id WHERE w.status <> o.status
  ) changed GROUP BY status HAVING sum(n) <> 0;
  RETURN NULL;
END $$;

CREATE FUNCTION certctl_count_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM notification_status_deltas;
  UPDATE notification_status_counts SET n = 0;
  RETURN NULL;
END $$;

CREATE TRIGGER certctl_count_insert AFTER INSERT ON notification_events
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION certctl_count_inserted();
CREATE TRIGGER certctl_count_delete AFTER DELETE ON notification_events
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION certctl_count_deleted();
CREATE TRIGGER certctl_count_update AFTER UPDATE ON notification_events
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION certctl_count_updated();
CREATE TRIGGER certctl_count_truncate AFTER TRUNCATE ON notification_events
  FOR EACH STATEMENT EXECUTE FUNCTION certctl_count_truncated();
"""

_SQLITE_TRIGGERS = (
    """CREATE TRIGGER certctl_count_insert AFTER INSERT ON notification_events BEGIN
         UPDATE notification_status_counts SET n = n + 1 WHERE status = NEW.status; END""",
    """CREATE TRIGGER certctl_count_delete AFTER DELETE ON notification_events BEGIN
         UPDATE notification_status_counts SET n = n - 1 WHERE status = OLD.status; END""",
    """CREATE TRIGGER certctl_count_update AFTER UPDATE OF status ON notification_events
         WHEN NEW.status <> OLD.status BEGIN
         UPDATE notification_status_counts SET n = n - 1 WHERE status = OLD.status;
         UPDATE notification_status_counts SET n = n + 1 WHERE status = NEW.status; END""",
)


def upgrade() -> None:
    op.create_table(
        "notification_status_counts",
        sa.Column("status", sa.Text(), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_table(
        "notification_status_deltas",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    postgresql = op.get_bind().dialect.name == "postgresql"
    if postgresql:
        # no write may land between the first count and the triggers that count it
        op.execute("LOCK TABLE notification_events IN SHARE MODE")
        op.execute(_PG_FUNCTIONS)
    else:
        for trigger in _SQLITE_TRIGGERS:
            op.execute(trigger)
    values = ", ".join(f"('{s}')" for s in _STATUSES)
    op.execute(f"INSERT INTO notification_status_counts (status) VALUES {values}")
    op.execute("UPDATE notification_status_counts SET n = (SELECT count(*) FROM notification_events e "
               "WHERE e.status = notification_status_counts.status)")


def downgrade() -> None:
    for name in ("insert", "delete", "update", "truncate"):
        op.execute(f"DROP TRIGGER IF EXISTS certctl_count_{name}" +
                   (" ON notification_events" if op.get_bind().dialect.name == "postgresql" else ""))
    if op.get_bind().dialect.name == "postgresql":
        for name in ("inserted", "deleted", "updated", "truncated"):
            op.execute(f"DROP FUNCTION IF EXISTS certctl_count_{name}()")
    op.drop_table("notification_status_deltas")
    op.drop_table("notification_status_counts")
