"""certctl-notify's schema: notification_events as in model.py, plus notification_attempts.

Revision ID: 0003_certctl_notify
Revises: 0002_retry_columns
Create Date: 2025-01-01

Existing rows are kept and cleaned: the original ``error`` moves to ``last_error``, a status
outside the five known ones becomes 'dead' with an explanation an operator can read, and sentinel
``sent_at`` values (Go's zero time) become NULL. The original's foreign key from certificate_id to
managed_certificates is dropped if present: certificates live in another service (SPEC §2).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_certctl_notify"
down_revision = "0002_retry_columns"
branch_labels = None
depends_on = None

TABLE = "notification_events"
STATUS_VALUES = "'pending', 'sent', 'failed', 'dead', 'read'"
OLD_INDEXES = {"idx_notification_events_status": ["status"], "idx_notification_events_type": ["type"]}
#: (name, columns, partial-index predicate or None), as model.py declares them.
NEW_INDEXES = [
    ("idx_notification_events_pending_sweep", ["dispatched_at"], "status = 'pending'"),
    ("idx_notification_events_status_created", ["status", "created_at", "id"], None),
    ("idx_notification_events_created", ["created_at", "id"], None),
]
#: Columns that were VARCHAR in the original schema and are TEXT now: (name, original type).
RETYPED = [
    ("type", sa.String(255)),
    ("channel", sa.String(255)),
    ("recipient", sa.String(255)),
    ("status", sa.String(50)),
]
ORIGINAL_PK = "notification_events_pkey"
NOW = sa.text("CURRENT_TIMESTAMP")


def _added_columns() -> list[sa.Column]:
    return [
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("severity", sa.Text(), nullable=False, server_default="warning"),
        sa.Column("dedupe_key", sa.Text(), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
    ]


def upgrade() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    columns = {c["name"]: c for c in inspector.get_columns(TABLE)}
    indexes = {i["name"] for i in inspector.get_indexes(TABLE)}
    certificate_fks = [
        fk["name"]
        for fk in inspector.get_foreign_keys(TABLE)
        if fk["constrained_columns"] == ["certificate_id"]
    ]
    pk_name = inspector.get_pk_constraint(TABLE)["name"]
    postgresql = bind.dialect.name == "postgresql"

    for name in OLD_INDEXES:
        if name in indexes:
            op.drop_index(name, table_name=TABLE)

    # The data fixes need only columns that exist already, and must precede the CHECK constraint.
    op.execute(
        f"UPDATE {TABLE} SET last_error = error"
        " WHERE last_error IS NULL AND error IS NOT NULL AND error <> ''"
    )
    op.execute(
        f"UPDATE {TABLE} SET status = 'dead', next_retry_at = NULL,"
        " last_error = 'migrated: unknown original status ' || status"
        " || COALESCE('; last error: ' || last_error, '')"
        f" WHERE status NOT IN ({STATUS_VALUES})"
    )
    # The original never scheduled a first failure for retry: a failed row with no next step is an
    # alert that was silently dropped. Make it a dead letter an operator sees and can requeue.
    op.execute(
        f"UPDATE {TABLE} SET status = 'dead',"
        " last_error = 'migrated: failed in the original service and never retried; requeue to send'"
        " || COALESCE('; last error: ' || last_error, '')"
        " WHERE status = 'failed' AND next_retry_at IS NULL"
    )
    # A sent_at on a row that was never delivered, or before 1971, is a placeholder (Go's zero
    # time, 0001-01-01): the real delivery time is unknown, so it becomes NULL.
    op.execute(
        f"UPDATE {TABLE} SET sent_at = NULL"
        " WHERE sent_at < '1971-01-01' OR (sent_at IS NOT NULL AND status NOT IN ('sent', 'read'))"
    )
    for name in ("created_at", "updated_at"):
        if name in columns:
            op.execute(f"UPDATE {TABLE} SET {name} = CURRENT_TIMESTAMP WHERE {name} IS NULL")

    with op.batch_alter_table(TABLE) as batch:
        for column in _added_columns():
            batch.add_column(column)
        for name in ("created_at", "updated_at"):
            if name in columns:
                batch.alter_column(
                    name,
                    existing_type=columns[name]["type"],
                    type_=sa.DateTime(timezone=True),
                    nullable=False,
                    server_default=NOW,
                )
            else:
                # Existing rows get the time of the migration.
                batch.add_column(
                    sa.Column(name, sa.DateTime(timezone=True), nullable=False, server_default=NOW)
                )
        for name, original in RETYPED:
            batch.alter_column(name, existing_type=original, type_=sa.Text(), existing_nullable=False)
        batch.alter_column("recipient", existing_type=sa.Text(), server_default="", existing_nullable=False)
        # Restated so the catalog shows 'pending'::text rather than the VARCHAR default.
        batch.alter_column(
            "status", existing_type=sa.Text(), server_default="pending", existing_nullable=False
        )
        batch.drop_column("error")
        for name in certificate_fks:
            batch.drop_constraint(name, type_="foreignkey")
        batch.create_check_constraint(op.f("ck_notification_events_status"), f"status IN ({STATUS_VALUES})")
        batch.create_unique_constraint(op.f("uq_notification_events_dedupe_key"), ["dedupe_key"])
        if not postgresql and pk_name != "pk_notification_events":
            batch.drop_constraint(pk_name, type_="primary")
            batch.create_primary_key(op.f("pk_notification_events"), ["id"])
    if postgresql and pk_name != "pk_notification_events":
        # A rename keeps the index; dropping and re-adding the key would rebuild it.
        op.execute(f'ALTER TABLE {TABLE} RENAME CONSTRAINT "{pk_name}" TO pk_notification_events')

    # The pending sweep's clock starts now for rows still waiting to be delivered.
    op.execute(f"UPDATE {TABLE} SET dispatched_at = created_at WHERE status IN ('pending', 'failed')")

    for name, index_columns, where in NEW_INDEXES:
        predicate = (
            {} if where is None else {"postgresql_where": sa.text(where), "sqlite_where": sa.text(where)}
        )
        op.create_index(name, TABLE, index_columns, **predicate)

    op.create_table(
        "notification_attempts",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("notification_id", sa.Text(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("error_class", sa.String(16), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("worker", sa.Text(), nullable=True),
        sa.Column("task_id", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_attempts")),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            [f"{TABLE}.id"],
            name=op.f("fk_notification_attempts_notification_id_notification_events"),
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "outcome IS NULL OR outcome IN ('sent', 'retry', 'dead')",
            name=op.f("ck_notification_attempts_outcome"),
        ),
        sa.CheckConstraint(
            "error_class IS NULL OR error_class IN ('transient', 'permanent')",
            name=op.f("ck_notification_attempts_error_class"),
        ),
    )
    op.create_index(
        op.f("ix_notification_attempts_notification_id"), "notification_attempts", ["notification_id"]
    )


def downgrade() -> None:
    bind = op.get_bind()
    postgresql = bind.dialect.name == "postgresql"
    op.drop_table("notification_attempts")
    for name, _columns, _where in NEW_INDEXES:
        op.drop_index(name, table_name=TABLE)
    if postgresql:
        op.execute(f"ALTER TABLE {TABLE} RENAME CONSTRAINT pk_notification_events TO {ORIGINAL_PK}")
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f("uq_notification_events_dedupe_key"), type_="unique")
        batch.drop_constraint(op.f("ck_notification_events_status"), type_="check")
        if not postgresql:
            batch.drop_constraint(op.f("pk_notification_events"), type_="primary")
            batch.create_primary_key(op.f(ORIGINAL_PK), ["id"])
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))
        # Fails loudly (rather than truncating) if a value no longer fits the original VARCHAR.
        for name, original in RETYPED:
            batch.alter_column(name, existing_type=sa.Text(), type_=original, existing_nullable=False)
        batch.alter_column(
            "recipient", existing_type=sa.String(255), server_default=None, existing_nullable=False
        )
        batch.alter_column(
            "status", existing_type=sa.String(50), server_default="pending", existing_nullable=False
        )
        for column in reversed(_added_columns()):
            batch.drop_column(column.name)
        batch.drop_column("updated_at")
        batch.drop_column("created_at")
    op.execute(f"UPDATE {TABLE} SET error = last_error")
    for name, index_columns in OLD_INDEXES.items():
        op.create_index(name, TABLE, index_columns)
