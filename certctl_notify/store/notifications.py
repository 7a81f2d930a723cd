"""The notification rows: intake, lookups and the counts by status.

Functions take a `Connection` and never commit: the caller frames the transaction.
"""

from __future__ import annotations

import functools

from sqlalchemy import Connection, Row, bindparam, func, select

from certctl_notify.model import Status, audit_log, events
from certctl_notify.store.dialect import insert_ignoring_conflicts, one_statement

#: The columns intake writes (`certctl_notify.alerts.Alert.rows`).
INTAKE_COLUMNS = ("id", "type", "certificate_id", "channel", "recipient", "subject", "message", "severity", "status",
                  "retry_count", "dedupe_key", "created_at", "updated_at", "dispatched_at")


@functools.cache  # built once per dialect: intake runs it for every alert (see store/transitions.py)
def _insert(dialect_name: str):
    """INSERT … ON CONFLICT (dedupe_key, channel) DO NOTHING RETURNING *; no row back = the key existed."""
    return insert_ignoring_conflicts(dialect_name, events, "dedupe_key", "channel").returning(*events.c)


def insert_notification(session: Connection, row: dict) -> Row | None:
    """Insert a new row; None when its ``dedupe_key`` already names a row of its channel."""
    return session.execute(_insert(session.dialect.name), row).first()


@functools.cache
def _insert_with_audit(dialect_name: str):
    """The new row and its audit entry in one statement (no audit entry when the key existed)."""
    inserted = (
        insert_ignoring_conflicts(dialect_name, events, "dedupe_key", "channel")
        .values({c: bindparam(f"v_{c}", type_=events.c[c].type) for c in INTAKE_COLUMNS})
        .returning(*events.c)
        .cte("inserted")
    )
    audited = (
        audit_log.insert()
        .from_select(
            ["at", "actor", "action", "target", "detail", "request_id"],
            select(bindparam("a_at", type_=audit_log.c.at.type), bindparam("a_actor", type_=audit_log.c.actor.type),
                   bindparam("a_action", type_=audit_log.c.action.type), inserted.c.id,
                   bindparam("a_detail", type_=audit_log.c.detail.type),
                   bindparam("a_request_id", type_=audit_log.c.request_id.type)),
        )
        .cte("audited")
    )
    return select(inserted).add_cte(audited)


def insert_notification_audited(session: Connection, row: dict, audit: dict) -> Row | None:
    """`insert_notification` plus its audit entry (``at, actor, action, detail, request_id``), in one
    statement where the database allows; None when the dedupe key existed (and nothing was audited)."""
    if not one_statement(session):
        inserted = insert_notification(session, row)
        if inserted is not None:
            session.execute(audit_log.insert(), {**audit, "target": inserted.id})
        return inserted
    params = {f"v_{column}": row[column] for column in INTAKE_COLUMNS}
    params.update({f"a_{key}": value for key, value in audit.items()})
    return session.execute(_insert_with_audit(session.dialect.name), params).first()


def get(session: Connection, notification_id: str) -> Row | None:
    return session.execute(select(events).where(events.c.id == notification_id)).first()


def get_by_dedupe_key(session: Connection, key: str, channel: str) -> Row | None:
    """The row a producer's ``dedupe_key`` names on ``channel``."""
    return session.execute(select(events).where(events.c.dedupe_key == key, events.c.channel == channel)).first()


def count_by_status(session: Connection) -> dict[str, int]:
    rows = session.execute(select(events.c.status, func.count()).group_by(events.c.status)).all()
    counts = {s.value: 0 for s in Status}
    counts.update({status: n for status, n in rows})
    return counts
