"""Attempt outcomes per hour and channel kept as attempts finish, so the 24-hour chart reads ~400 rows.

Revision ID: 0011_attempt_hourly
Revises: 0010_attempt_channel
Create Date: 2026-12-03

PostgreSQL only, the same way as the status counts (0008): statement-level triggers on
notification_attempts append, without taking a lock, one delta row per (hour, channel, outcome) that a
statement finished to attempt_hourly_deltas; beat folds them into attempt_hourly with the status counts
(store.activity.fold_hourly) and drops hours older than a week; attempts that finished more than 8 days
ago (a restore, a backfill) are not counted at all. An attempt finishes once (its outcome
goes from NULL to set), which is what is counted; deleting attempts (retention) does not uncount
activity that happened. The last 25 hours are counted from the attempts already there, under a SHARE
lock so no attempt finishes between that count and the triggers. SQLite (embedded, small) keeps
counting the attempts directly.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_attempt_hourly"
down_revision = "0010_attempt_channel"
branch_labels = None
depends_on = None

_HOUR = "date_trunc('hour', {t}.finished_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"
_CHANNEL = "coalesce({t}.channel, (SELECT e.channel FROM notification_events e WHERE e.id = {t}.notification_id))"

_PG = f"""
CREATE FUNCTION certctl_hourly_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO attempt_hourly_deltas (hour, channel, outcome, n)
  SELECT {_HOUR.format(t="w")}, {_CHANNEL.format(t="w")}, w.outcome, count(*)
  FROM new_rows w WHERE w.outcome IS NOT NULL AND w.finished_at >= now() - interval '8 days' GROUP BY 1, 2, 3;
  RETURN NULL;
END $$;

CREATE FUNCTION certctl_hourly_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO attempt_hourly_deltas (hour, channel, outcome, n)
  SELECT {_HOUR.format(t="w")}, {_CHANNEL.format(t="w")}, w.outcome, count(*)
  FROM new_rows w JOIN old_rows o ON o.id = w.id
  WHERE o.outcome IS NULL AND w.outcome IS NOT NULL AND w.finished_at >= now() - interval '8 days'
  GROUP BY 1, 2, 3;
  RETURN NULL;
END $$;

CREATE FUNCTION certctl_hourly_truncated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM attempt_hourly_deltas;
  DELETE FROM attempt_hourly;
  RETURN NULL;
END $$;

CREATE TRIGGER certctl_hourly_insert AFTER INSERT ON notification_attempts
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION certctl_hourly_inserted();
CREATE TRIGGER certctl_hourly_update AFTER UPDATE ON notification_attempts
  REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION certctl_hourly_updated();
CREATE TRIGGER certctl_hourly_truncate AFTER TRUNCATE ON notification_attempts
  FOR EACH STATEMENT EXECUTE FUNCTION certctl_hourly_truncated();
"""


def upgrade() -> None:
    op.create_table(
        "attempt_hourly",
        sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("channel", sa.Text(), primary_key=True),
        sa.Column("outcome", sa.String(16), primary_key=True),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "attempt_hourly_deltas",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("channel", sa.Text(), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
    )
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("LOCK TABLE notification_attempts IN SHARE MODE")
    op.execute(_PG)
    op.execute(f"""INSERT INTO attempt_hourly (hour, channel, outcome, n)
        SELECT {_HOUR.format(t="a")}, {_CHANNEL.format(t="a")}, a.outcome, count(*) FROM notification_attempts a
        WHERE a.outcome IS NOT NULL AND a.finished_at >= now() - interval '25 hours' GROUP BY 1, 2, 3""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in ("insert", "update", "truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS certctl_hourly_{name} ON notification_attempts")
        for name in ("inserted", "updated", "truncated"):
            op.execute(f"DROP FUNCTION IF EXISTS certctl_hourly_{name}()")
    op.drop_table("attempt_hourly_deltas")
    op.drop_table("attempt_hourly")
