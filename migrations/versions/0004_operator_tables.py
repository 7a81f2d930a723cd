"""Operator tables: audit_log (every admin action) and requeue_jobs (bulk requeue progress).

Revision ID: 0004_operator_tables
Revises: 0003_certctl_notify
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_operator_tables"
down_revision = "0003_certctl_notify"
branch_labels = None
depends_on = None


def _id():
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("idx_audit_log_at", "audit_log", ["at", "id"])
    op.create_table(
        "requeue_jobs",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("rate_per_second", sa.Float(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("requeued", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("skipped", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("cursor", sa.Text(), nullable=True),
        sa.Column("cutoff", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_requeue_jobs"),
        sa.CheckConstraint("status IN ('running', 'done', 'cancelled')", name="status"),
    )


def downgrade() -> None:
    op.drop_table("requeue_jobs")
    op.drop_index("idx_audit_log_at", table_name="audit_log")
    op.drop_table("audit_log")
