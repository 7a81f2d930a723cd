"""Delivery-side SQL: intake, claims, attempt records and every status transition.

Functions take a `Connection` and never commit: the caller frames the transaction. Every state change
is one ``UPDATE … WHERE id = … AND status IN (…) … RETURNING``; zero rows is a normal answer that
the caller turns into a 409, a skip or a no-op, so a late or duplicate writer cannot undo another's
work.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, Row, func, or_, select, text, union_all, update

from certctl_notify.model import TRANSITIONS, Outcome, Status, attempts, events
from certctl_notify.store import statements
from certctl_notify.store.clock import db_now

__all__ = [
    "insert_notification", "insert_notification_audited", "record_sent", "get_by_dedupe_key", "get",
    "list_attempts", "claim", "finish_attempt",
    "mark_sent", "mark_failed", "mark_dead", "requeue", "requeue_many", "mark_read", "count_by_status",
    "try_sweep_lock", "due_for_redispatch", "mark_dispatched",
]

#: Key of the PostgreSQL advisory lock that keeps two sweeps from running at once.
SWEEP_LOCK_KEY = 0x6365_7274_6E74  # "certnt"
#: Longest ``last_error`` / attempt error kept, in characters.
MAX_ERROR_CHARS = 2000


def _cap(error: str | None) -> str | None:
    if error is None or len(error) <= MAX_ERROR_CHARS:
        return error
    return error[: MAX_ERROR_CHARS - 1] + "…"


def _live_lease_absent():
    """No attempt holds the row: no lease, or one that ran out by the database's clock."""
    return or_(events.c.lease_expires_at.is_(None), events.c.lease_expires_at < db_now())


def _transition(session: Connection, name: str, notification_id: str, *where, **values) -> Row | None:
    """Apply the named transition from `TRANSITIONS` as one guarded UPDATE; None when it did not apply."""
    sources, target = TRANSITIONS[name]
    stmt = (
        update(events)
        .where(events.c.id == notification_id, events.c.status.in_([s.value for s in sources]), *where)
        .values(status=target.value, **values)
        .returning(*events.c)
    )
    return session.execute(stmt).first()


# --- intake -----------------------------------------------------------------------------------


def insert_notification(session: Connection, row: dict) -> Row | None:
    """Insert a new row; None when its ``dedupe_key`` already exists (the caller returns that row)."""
    return session.execute(statements.insert_notification(session.dialect.name), row).first()


def insert_notification_audited(session: Connection, row: dict, audit: dict) -> Row | None:
    """`insert_notification` plus its audit entry (``at, actor, action, detail, request_id``), in one
    statement on PostgreSQL; None when the dedupe key existed (and nothing was audited)."""
    if session.dialect.name != "postgresql":
        inserted = insert_notification(session, row)
        if inserted is not None:
            session.execute(statements.insert_audit(), {**audit, "target": inserted.id})
        return inserted
    params = {f"v_{column}": row[column] for column in statements.INTAKE_COLUMNS}
    params.update({f"a_{key}": value for key, value in audit.items()})
    return session.execute(statements.insert_notification_with_audit(), params).first()


def get_by_dedupe_key(session: Connection, key: str, channel: str) -> Row | None:
    """The row a producer's ``dedupe_key`` names on ``channel``."""
    return session.execute(select(events).where(events.c.dedupe_key == key, events.c.channel == channel)).first()


def get(session: Connection, notification_id: str) -> Row | None:
    return session.execute(select(events).where(events.c.id == notification_id)).first()


def list_attempts(session: Connection, notification_id: str) -> Sequence[Row]:
    stmt = select(attempts).where(attempts.c.notification_id == notification_id).order_by(attempts.c.id)
    return session.execute(stmt).all()


# --- delivery ---------------------------------------------------------------------------------


def claim(
    session: Connection,
    notification_id: str,
    *,
    attempt: int,
    token: str,
    now: datetime,
    lease_seconds: float,
    worker: str,
    task_id: str | None,
) -> Row | None:
    """Claim attempt ``attempt`` of a row and open its attempt record, in one round trip on PostgreSQL.

    Only a pending/failed row with exactly ``attempt - 1`` failures and no live lease can be claimed,
    so a duplicated or stale message (or the sweep racing the broker's retry) finds nothing to do.
    The lease runs ``lease_seconds`` on the database's clock, whatever this host's clock says;
    ``now`` stamps the attempt's start.

    Returns:
        The claimed row plus ``attempt_id`` (its open attempt record), or None when the message has
        nothing to deliver.
    """
    params = {"b_id": notification_id, "b_failures": attempt - 1, "b_now": now, "b_token": token,
              "b_lease_seconds": lease_seconds, "b_attempt": attempt, "b_worker": worker,
              "b_task_id": task_id}
    dialect = session.dialect.name
    if dialect == "postgresql":
        return session.execute(statements.claim(dialect), params).first()
    row = session.execute(statements.claim(dialect), params).first()  # SQLite: no data-modifying CTEs
    if row is None:
        return None
    attempt_id = session.execute(statements.open_attempt(), {
        "notification_id": notification_id, "attempt": attempt, "started_at": now, "worker": worker,
        "task_id": task_id}).scalar_one()
    return _with_attempt_id(row, attempt_id)


def _with_attempt_id(row: Row, attempt_id: int):
    from collections import namedtuple

    fields = (*row._fields, "attempt_id")
    return namedtuple("ClaimedRow", fields)(*row, attempt_id)


def finish_attempt(
    session: Connection,
    notification_id: str,
    *,
    attempt: int,
    task_id: str | None,
    now: datetime,
    outcome: Outcome,
    error_class: str | None = None,
    error: str | None = None,
    status_code: int | None = None,
    attempt_id: int | None = None,
    started_at: datetime | None = None,
) -> float | None:
    """Close the open attempt record of ``attempt`` with its outcome: by ``attempt_id`` when the
    caller holds the claim, else found by notification, attempt number and task id.

    Returns:
        The attempt's duration in seconds, or None when no open record was found.
    """
    if attempt_id is None:
        found = session.execute(
            select(attempts.c.id, attempts.c.started_at).where(
                attempts.c.notification_id == notification_id,
                attempts.c.attempt == attempt,
                attempts.c.task_id == task_id,
                attempts.c.finished_at.is_(None),
            ).order_by(attempts.c.id.desc()).limit(1)
        ).first()
        if found is None:
            return None
        attempt_id, started_at = found
    seconds = max(0.0, (now - started_at).total_seconds()) if started_at else None
    session.execute(statements.finish_attempt(), {
        "b_id": attempt_id, "b_now": now, "b_outcome": outcome.value, "b_error_class": error_class,
        "b_error": _cap(error), "b_status_code": status_code,
        "b_duration_ms": int(seconds * 1000) if seconds is not None else None})
    return seconds


def mark_sent(session: Connection, notification_id: str, *, token: str, now: datetime) -> Row | None:
    """Delivered: ``sent_at`` set, retry bookkeeping cleared, ``retry_count`` left as the history."""
    stmt = statements.leased_transition("deliver_sent", "sent_at", "next_retry_at", "last_error", "updated_at")
    return session.execute(stmt, {"b_id": notification_id, "b_token": token, "b_sent_at": now,
                                  "b_next_retry_at": None, "b_last_error": None, "b_updated_at": now}).first()


def record_sent(
    session: Connection, notification_id: str, *, token: str, now: datetime, attempt_id: int,
    started_at: datetime, status_code: int | None,
) -> tuple[Row | None, float]:
    """Close the attempt record as sent and mark the row sent (one statement on PostgreSQL).

    Returns:
        (the sent row, or None when the claim was lost; the attempt's duration in seconds)
    """
    seconds = max(0.0, (now - started_at).total_seconds())
    if session.dialect.name != "postgresql":
        finish_attempt(session, notification_id, attempt=0, task_id=None, now=now, outcome=Outcome.SENT,
                       status_code=status_code, attempt_id=attempt_id, started_at=started_at)
        return mark_sent(session, notification_id, token=token, now=now), seconds
    row = session.execute(statements.sent_with_attempt(), {
        "b_attempt_id": attempt_id, "b_finished_at": now, "b_status_code": status_code,
        "b_duration_ms": int(seconds * 1000), "b_id": notification_id, "b_token": token, "b_sent_at": now,
        "b_next_retry_at": None, "b_last_error": None, "b_updated_at": now}).first()
    return row, seconds


def mark_failed(
    session: Connection, notification_id: str, *, token: str, failures: int, next_retry_at: datetime,
    error: str, now: datetime,
) -> Row | None:
    """A transient failure with budget left: count, error and next step written together."""
    stmt = statements.leased_transition(
        "deliver_retry", "retry_count", "next_retry_at", "last_error", "dispatched_at", "updated_at")
    return session.execute(stmt, {
        "b_id": notification_id, "b_token": token, "b_retry_count": failures, "b_next_retry_at": next_retry_at,
        "b_last_error": _cap(error), "b_dispatched_at": now, "b_updated_at": now}).first()


def mark_dead(
    session: Connection, notification_id: str, *, token: str, failures: int, error: str, now: datetime
) -> Row | None:
    """Budget spent or a permanent error: the dead letter an operator sees and can requeue."""
    return _transition(
        session, "deliver_dead", notification_id, events.c.lease_owner == token,
        retry_count=failures, next_retry_at=None, last_error=_cap(error),
        lease_owner=None, lease_expires_at=None, updated_at=now,
    )


# --- operator actions -------------------------------------------------------------------------


def requeue(
    session: Connection, notification_id: str, *, now: datetime, unchanged_since: datetime | None = None
) -> Row | None:
    """Reset a dead/failed row to a fresh pending one; refused while an attempt holds a live lease,
    and (for bulk jobs) when the row changed after ``unchanged_since``."""
    unchanged = () if unchanged_since is None else (events.c.updated_at <= unchanged_since,)
    return _transition(
        session, "requeue", notification_id, _live_lease_absent(), *unchanged,
        retry_count=0, next_retry_at=None, last_error=None, lease_owner=None, lease_expires_at=None,
        dispatched_at=now, updated_at=now,
    )


def requeue_many(session: Connection, ids: Sequence[str], *, now: datetime, unchanged_since: datetime) -> list[str]:
    """`requeue` for a batch of a bulk job, as one guarded statement; returns the ids it reset."""
    sources, target = TRANSITIONS["requeue"]
    stmt = (
        update(events)
        .where(events.c.id.in_(list(ids)), events.c.status.in_([s.value for s in sources]), _live_lease_absent(),
               events.c.updated_at <= unchanged_since)
        .values(status=target.value, retry_count=0, next_retry_at=None, last_error=None, lease_owner=None,
                lease_expires_at=None, dispatched_at=now, updated_at=now)
        .returning(events.c.id)
    )
    return list(session.execute(stmt).scalars())


def mark_read(session: Connection, notification_id: str, *, now: datetime) -> Row | None:
    return _transition(session, "mark_read", notification_id, updated_at=now)


def count_by_status(session: Connection) -> dict[str, int]:
    rows = session.execute(select(events.c.status, func.count()).group_by(events.c.status)).all()
    counts = {s.value: 0 for s in Status}
    counts.update({status: n for status, n in rows})
    return counts


# --- sweep ------------------------------------------------------------------------------------


def try_sweep_lock(session: Connection) -> bool:
    """Take the sweep lock for this transaction; False when another sweep holds it.

    PostgreSQL: a transaction-scoped advisory lock, released at commit, so replicas of beat or of
    `certctl-notify sweep` never sweep at once. SQLite (embedded mode) has one beat and its
    ``BEGIN IMMEDIATE`` already serialises writers.
    """
    if session.dialect.name != "postgresql":
        return True
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SWEEP_LOCK_KEY}).scalar())


def due_for_redispatch(session: Connection, *, now: datetime, grace_seconds: float, limit: int) -> Sequence[Row]:
    """Rows the broker should have delivered by now, oldest due first.

    - failed rows whose retry is overdue by more than the grace (the broker lost the retry message);
    - pending rows published more than the grace ago and never claimed (lost intake or requeue);
    - either kind whose claim lease has expired (a worker died mid-attempt).

    Each branch walks its own partial index, so the cost follows the due rows, not the table.
    """
    cutoff = now - timedelta(seconds=grace_seconds)
    columns = [events.c.id, events.c.status, events.c.retry_count, events.c.lease_expires_at]
    overdue = select(*columns, events.c.next_retry_at.label("due_at")).where(
        events.c.status == Status.FAILED.value,
        events.c.next_retry_at.is_not(None),
        events.c.next_retry_at <= cutoff,
        or_(events.c.dispatched_at.is_(None), events.c.dispatched_at <= cutoff),
        _live_lease_absent(),
    )
    stale = select(*columns, events.c.dispatched_at.label("due_at")).where(
        events.c.status == Status.PENDING.value,
        events.c.dispatched_at <= cutoff,
        _live_lease_absent(),
    )
    both = union_all(overdue, stale).subquery()
    return session.execute(select(both).order_by(both.c.due_at, both.c.id).limit(limit)).all()


def mark_dispatched(session: Connection, ids: Iterable[str], *, now: datetime) -> None:
    """Record that a delivery task was just published for these still-undelivered rows."""
    ids = list(ids)
    if ids:
        session.execute(
            update(events)
            .where(events.c.id.in_(ids), events.c.status.in_([Status.PENDING.value, Status.FAILED.value]))
            .values(dispatched_at=now)
        )

