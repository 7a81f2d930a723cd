"""Attempts get an index on finished_at, so the console's per-hour activity reads only its window.

Revision ID: 0007_attempts_finished_index
Revises: 0006_requeue_job_generation
Create Date: 2026-12-04

The "last 24 hours" chart (store/activity.py) counts the attempts that finished in the last day;
without this index that is a scan of the whole attempt history, which only grows.

A plain CREATE INDEX, not CONCURRENTLY: env.py runs every revision inside a transaction (its own,
or a caller's), where PostgreSQL refuses CONCURRENTLY. The build holds off writes to
notification_attempts (workers recording outcomes wait) for one pass over the table, bounded by
env.py's statement timeout; on a long attempt history, upgrade at a quiet time.
"""

from __future__ import annotations

from alembic import op

revision = "0007_attempts_finished_index"
down_revision = "0006_requeue_job_generation"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("idx_notification_attempts_finished", "notification_attempts", ["finished_at"])


def downgrade() -> None:
    op.drop_index("idx_notification_attempts_finished", table_name="notification_attempts")
