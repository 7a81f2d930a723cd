"""Bulk requeue jobs get a generation: the chain of chunk messages that owns the job.

Revision ID: 0006_requeue_job_generation
Revises: 0005_dedupe_per_channel
Create Date: 2026-12-03

The sweep resumes a job that looks stalled by taking it over (generation + 1); a chunk message of an
older generation, merely delayed behind a busy queue, then finds the job no longer its own and stops,
so a job is never worked by two chains at once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_requeue_job_generation"
down_revision = "0005_dedupe_per_channel"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("requeue_jobs") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("requeue_jobs") as batch:
        batch.drop_column("generation")
