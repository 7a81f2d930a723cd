"""Hot-path statements, built once per dialect with bound parameters.

Building a SQLAlchemy statement and its cache key costs about as much CPU as running it; intake,
claim and record run once per alert, so they are built here once and executed with values.
"""

from __future__ import annotations

import functools

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from certctl_notify.model import TRANSITIONS, Status, attempts, audit_log, events
from certctl_notify.store.clock import db_now, db_now_plus

_UNDELIVERED = [Status.PENDING.value, Status.FAILED.value]


@functools.cache
def insert_notification(dialect: str):
    """INSERT … ON CONFLICT (dedupe_key) DO NOTHING RETURNING *; no row back = the key existed."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    keyed = insert(events).on_conflict_do_nothing(index_elements=[events.c.dedupe_key, events.c.channel])
    return keyed.returning(*events.c)


def _claim_update():
    return (
        update(events)
        .where(
            events.c.id == bindparam("b_id"),
            events.c.status.in_(_UNDELIVERED),
            events.c.retry_count == bindparam("b_failures"),
            or_(events.c.lease_expires_at.is_(None), events.c.lease_expires_at < db_now()),
        )
        .values(lease_owner=bindparam("b_token"), lease_expires_at=db_now_plus("b_lease_seconds"),
                updated_at=bindparam("b_now"))
        .returning(*events.c)
    )


@functools.cache
def claim(dialect: str):
    """PostgreSQL: claim the row and open its attempt record in one statement (data-modifying CTEs).
    SQLite has none: there this is the UPDATE alone and `open_attempt` follows."""
    if dialect != "postgresql":
        return _claim_update()
    claimed = _claim_update().cte("claimed")
    opened = (
        attempts.insert()
        .from_select(
            ["notification_id", "attempt", "started_at", "worker", "task_id"],
            select(claimed.c.id, bindparam("b_attempt", type_=attempts.c.attempt.type),
                   bindparam("b_now", type_=attempts.c.started_at.type),
                   bindparam("b_worker", type_=attempts.c.worker.type),
                   bindparam("b_task_id", type_=attempts.c.task_id.type)),
        )
        .returning(attempts.c.id.label("attempt_id"), attempts.c.notification_id)
        .cte("opened")
    )
    joined = claimed.join(opened, opened.c.notification_id == claimed.c.id)
    return select(claimed, opened.c.attempt_id).select_from(joined)


@functools.cache
def open_attempt():
    return attempts.insert().returning(attempts.c.id)


@functools.cache
def finish_attempt():
    return (
        update(attempts)
        .where(attempts.c.id == bindparam("b_id"))
        .values(finished_at=bindparam("b_now"), outcome=bindparam("b_outcome"),
                error_class=bindparam("b_error_class"), error=bindparam("b_error"),
                status_code=bindparam("b_status_code"), duration_ms=bindparam("b_duration_ms"))
    )


@functools.cache
def leased_transition(name: str, *columns: str):
    """The named delivery transition, guarded by the claim token, setting ``columns`` from ``b_<col>``."""
    sources, target = TRANSITIONS[name]
    return (
        update(events)
        .where(events.c.id == bindparam("b_id"), events.c.status.in_([s.value for s in sources]),
               events.c.lease_owner == bindparam("b_token"))
        .values(status=target.value, lease_owner=None, lease_expires_at=None,
                **{column: bindparam(f"b_{column}") for column in columns})
        .returning(*events.c)
    )


@functools.cache
def insert_audit():
    return audit_log.insert()


@functools.cache
def sent_with_attempt():
    """PostgreSQL: close the attempt record and mark the row sent in one statement."""
    finished = (
        update(attempts)
        .where(attempts.c.id == bindparam("b_attempt_id"))
        .values(finished_at=bindparam("b_finished_at"), outcome="sent", status_code=bindparam("b_status_code"),
                duration_ms=bindparam("b_duration_ms"))
        .cte("finished")
    )
    return leased_transition("deliver_sent", "sent_at", "next_retry_at", "last_error", "updated_at").add_cte(finished)


#: The columns intake writes (`certctl_notify.alerts.Alert.rows`).
INTAKE_COLUMNS = ("id", "type", "certificate_id", "channel", "recipient", "subject", "message", "severity", "status",
                  "retry_count", "dedupe_key", "created_at", "updated_at", "dispatched_at")


@functools.cache
def insert_notification_with_audit():
    """PostgreSQL: the new row and its audit entry in one statement; no row back = the key existed
    (and then no audit entry is written either)."""
    inserted = (
        postgresql.insert(events)
        .values({c: bindparam(f"v_{c}", type_=events.c[c].type) for c in INTAKE_COLUMNS})
        .on_conflict_do_nothing(index_elements=[events.c.dedupe_key, events.c.channel])
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
