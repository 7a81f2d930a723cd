"""Notifications get an index on (status, updated_at), so retention finds the rows past their age without a scan.

Revision ID: 0009_retention_index
Revises: 0008_status_counts
Create Date: 2026-12-05

The purge (certctl_notify/retention.py) deletes sent, read and dead rows whose last change is older
than their retention, oldest first, a batch per transaction: each batch is a range of this index for
one status, so it reads only the rows it deletes however large the table.

A plain CREATE INDEX, not CONCURRENTLY, for the reason 0007 gives (env.py runs every revision in a
transaction): the build holds off writes to notification_events (intake and workers wait) for one pass
over the table, bounded by env.py's statement timeout; on a large table, upgrade at a quiet time.
"""

from __future__ import annotations

from alembic import op

revision = "0009_retention_index"
down_revision = "0008_status_counts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("idx_notification_events_status_updated", "notification_events", ["status", "updated_at"])


def downgrade() -> None:
    op.drop_index("idx_notification_events_status_updated", table_name="notification_events")
