"""The original service's notification_events table, as it created it.

Revision ID: 0001_original
Revises:
Create Date: 2025-01-01

A database of the original service already has this table but no alembic_version, so the table
is created only if missing. The original's foreign key from certificate_id to
managed_certificates is left out: certificates live in another service.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_original"
down_revision = None
branch_labels = None
depends_on = None

INDEXES = {
    "idx_notification_events_certificate_id": "certificate_id",
    "idx_notification_events_status": "status",
    "idx_notification_events_type": "type",
}


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("notification_events"):
        return
    op.create_table(
        "notification_events",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("type", sa.String(255), nullable=False),
        sa.Column("certificate_id", sa.Text(), nullable=True),
        sa.Column("channel", sa.String(255), nullable=False),
        sa.Column("recipient", sa.String(255), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(50), nullable=False, server_default="pending"),
        sa.Column("error", sa.Text(), nullable=True),
        # PostgreSQL's default name for "id TEXT PRIMARY KEY", spelled out so the naming
        # convention of the models does not rename it.
        sa.PrimaryKeyConstraint("id", name=op.f("notification_events_pkey")),
    )
    for name, column in INDEXES.items():
        op.create_index(name, "notification_events", [column])


def downgrade() -> None:
    op.drop_table("notification_events")
