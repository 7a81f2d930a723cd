"""Retry bookkeeping, mirroring the original service's migration 000016.

Revision ID: 0002_retry_columns
Revises: 0001_original
Create Date: 2025-01-01

A database of the original service may have 000016 applied already, so each column and the
index is added only if missing (000016 itself used ADD COLUMN IF NOT EXISTS).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_retry_columns"
down_revision = "0001_original"
branch_labels = None
depends_on = None

RETRY_SWEEP_WHERE = "status = 'failed' AND next_retry_at IS NOT NULL"


def upgrade() -> None:
    inspector = sa.inspect(op.get_bind())
    existing = {c["name"] for c in inspector.get_columns("notification_events")}
    wanted = [
        sa.Column("retry_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("next_retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
    ]
    missing = [c for c in wanted if c.name not in existing]
    if missing:
        with op.batch_alter_table("notification_events") as batch:
            for column in missing:
                batch.add_column(column)
    indexes = {i["name"] for i in inspector.get_indexes("notification_events")}
    if "idx_notification_events_retry_sweep" not in indexes:
        op.create_index(
            "idx_notification_events_retry_sweep",
            "notification_events",
            ["next_retry_at"],
            postgresql_where=sa.text(RETRY_SWEEP_WHERE),
            sqlite_where=sa.text(RETRY_SWEEP_WHERE),
        )


def downgrade() -> None:
    op.drop_index("idx_notification_events_retry_sweep", table_name="notification_events")
    with op.batch_alter_table("notification_events") as batch:
        batch.drop_column("last_error")
        batch.drop_column("next_retry_at")
        batch.drop_column("retry_count")
