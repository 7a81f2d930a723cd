"""A dedupe key names one alert per channel: unique on (dedupe_key, channel), not on the key alone.

Revision ID: 0005_dedupe_per_channel
Revises: 0004_operator_tables
Create Date: 2026-12-03

Before, a key was unique by itself and an alert to several channels stored ``<key>:<Channel>`` on
each row, while an alert to one channel stored the bare key: the same key could then name two rows
of one channel (sent twice) or a row of another channel (never stored). Existing rows keep their
meaning: a key ending in ``:<its own channel>`` was written by a several-channel call with the bare
key, so it becomes the bare key, unless a row of that channel holds the bare key already (the
duplicate the old scheme let through), which keeps its suffixed key.
"""

from __future__ import annotations

from alembic import op

revision = "0005_dedupe_per_channel"
down_revision = "0004_operator_tables"
branch_labels = None
depends_on = None

TABLE = "notification_events"


def _bare(table: str) -> str:
    """The key without its ``:<channel>`` suffix, columns qualified by ``table``."""
    return f"substr({table}.dedupe_key, 1, length({table}.dedupe_key) - length(':' || {table}.channel))"


def upgrade() -> None:
    # The old constraint goes first: two rows of different channels get the same bare key.
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f("uq_notification_events_dedupe_key"), type_="unique")
    op.execute(
        f"UPDATE {TABLE} SET dedupe_key = {_bare(TABLE)}"
        f" WHERE dedupe_key LIKE '%:' || channel AND length(dedupe_key) > length(':' || channel)"
        f" AND NOT EXISTS (SELECT 1 FROM {TABLE} other"
        f" WHERE other.channel = {TABLE}.channel AND other.dedupe_key = {_bare(TABLE)})"
    )
    with op.batch_alter_table(TABLE) as batch:
        batch.create_unique_constraint(op.f("uq_notification_events_dedupe_key_channel"), ["dedupe_key", "channel"])


def downgrade() -> None:
    with op.batch_alter_table(TABLE) as batch:
        batch.drop_constraint(op.f("uq_notification_events_dedupe_key_channel"), type_="unique")
    # The old scheme: a key shared by rows of several channels carries each row's channel.
    op.execute(
        f"UPDATE {TABLE} SET dedupe_key = dedupe_key || ':' || channel"
        f" WHERE dedupe_key IN (SELECT dedupe_key FROM {TABLE} WHERE dedupe_key IS NOT NULL"
        " GROUP BY dedupe_key HAVING count(*) > 1)"
    )
    with op.batch_alter_table(TABLE) as batch:
        batch.create_unique_constraint(op.f("uq_notification_events_dedupe_key"), ["dedupe_key"])
