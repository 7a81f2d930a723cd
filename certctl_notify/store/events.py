"""Delivery-side SQL: intake, claims, attempt records and every status transition.

Functions take a `Session` and never commit: the caller frames the transaction. Every state change
is one ``UPDATE … WHERE id = … AND status IN (…) … RETURNING``; zero rows is a normal answer that
the caller turns into a 409, a skip or a no-op, so a late or duplicate writer cannot undo another's
work.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Row, func, literal, or_, select, text, union_all, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from certctl_notify.model import TRANSITIONS, Outcome, Status, attempts, events

__all__ = [
    "insert_notification", "get_by_dedupe_key", "get", "list_attempts", "claim", "finish_attempt",
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


def _live_lease_absent(now: datetime):
    return or_(events.c.lease_expires_at.is_(None), events.c.lease_expires_at < now)


def _transition(session: Session, name: str, notification_id: str, *where, **values) -> Row | None:
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


def insert_notification(session: Session, row: dict) -> Row | None:
    """Insert a new row; None when its ``dedupe_key`` already exists (the caller returns that row)."""
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(events).values(**row)
    if row.get("dedupe_key") is not None:
        stmt = stmt.on_conflict_do_nothing(index_elements=[events.c.dedupe_key])
    return session.execute(stmt.returning(*events.c)).first()


def get_by_dedupe_key(session: Session, key: str) -> Row | None:
    return session.execute(select(events).where(events.c.dedupe_key == key)).first()


def get(session: Session, notification_id: str) -> Row | None:
    return session.execute(select(events).where(events.c.id == notification_id)).first()


def list_attempts(session: Session, notification_id: str) -> Sequence[Row]:
    stmt = select(attempts).where(attempts.c.notification_id == notification_id).order_by(attempts.c.id)
    return session.execute(stmt).all()


# --- delivery ---------------------------------------------------------------------------------


def claim(
    session: Session,
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

    Returns:
        The claimed row plus ``attempt_id`` (its open attempt record), or None when the message has
        nothing to deliver.
    """
    claimed = (
        update(events)
        .where(
            events.c.id == notification_id,
            events.c.status.in_([Status.PENDING.value, Status.FAILED.value]),
            events.c.retry_count == attempt - 1,
            _live_lease_absent(now),
        )
        .values(lease_owner=token, lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now)
        .returning(*events.c)
    )
    opened = {"attempt": attempt, "started_at": now, "worker": worker, "task_id": task_id}
    if session.get_bind().dialect.name != "postgresql":  # SQLite has no data-modifying CTEs
        row = session.execute(claimed).first()
        if row is None:
            return None
        attempt_id = session.execute(
            attempts.insert().values(notification_id=notification_id, **opened).returning(attempts.c.id)
        ).scalar_one()
        return _with_attempt_id(row, attempt_id)
    claimed_cte = claimed.cte("claimed")
    opened_cte = (
        attempts.insert()
        .from_select(
            ["notification_id", *opened],
            select(claimed_cte.c.id, *(literal(v, attempts.c[k].type) for k, v in opened.items())),
        )
        .returning(attempts.c.id.label("attempt_id"), attempts.c.notification_id)
        .cte("opened")
    )
    joined = claimed_cte.join(opened_cte, opened_cte.c.notification_id == claimed_cte.c.id)
    return session.execute(select(claimed_cte, opened_cte.c.attempt_id).select_from(joined)).first()


def _with_attempt_id(row: Row, attempt_id: int):
    from collections import namedtuple

    fields = (*row._fields, "attempt_id")
    return namedtuple("ClaimedRow", fields)(*row, attempt_id)


def finish_attempt(
    session: Session,
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
    session.execute(
        update(attempts)
        .where(attempts.c.id == attempt_id)
        .values(
            finished_at=now,
            outcome=outcome.value,
            error_class=error_class,
            error=_cap(error),
            status_code=status_code,
            duration_ms=int(seconds * 1000) if seconds is not None else None,
        )
    )
    return seconds


def mark_sent(session: Session, notification_id: str, *, token: str, now: datetime) -> Row | None:
    """Delivered: ``sent_at`` set, retry bookkeeping cleared, ``retry_count`` left as the history."""
    return _transition(
        session, "deliver_sent", notification_id, events.c.lease_owner == token,
        sent_at=now, next_retry_at=None, last_error=None, lease_owner=None, lease_expires_at=None, updated_at=now,
    )


def mark_failed(
    session: Session, notification_id: str, *, token: str, failures: int, next_retry_at: datetime,
    error: str, now: datetime,
) -> Row | None:
    """A transient failure with budget left: count, error and next step written together."""
    return _transition(
        session, "deliver_retry", notification_id, events.c.lease_owner == token,
        retry_count=failures, next_retry_at=next_retry_at, last_error=_cap(error),
        lease_owner=None, lease_expires_at=None, dispatched_at=now, updated_at=now,
    )


def mark_dead(
    session: Session, notification_id: str, *, token: str, failures: int, error: str, now: datetime
) -> Row | None:
    """Budget spent or a permanent error: the dead letter an operator sees and can requeue."""
    return _transition(
        session, "deliver_dead", notification_id, events.c.lease_owner == token,
        retry_count=failures, next_retry_at=None, last_error=_cap(error),
        lease_owner=None, lease_expires_at=None, updated_at=now,
    )


# --- operator actions -------------------------------------------------------------------------


def requeue(
    session: Session, notification_id: str, *, now: datetime, unchanged_since: datetime | None = None
) -> Row | None:
    """Reset a dead/failed row to a fresh pending one; refused while an attempt holds a live lease,
    and (for bulk jobs) when the row changed after ``unchanged_since``."""
    unchanged = () if unchanged_since is None else (events.c.updated_at <= unchanged_since,)
    return _transition(
        session, "requeue", notification_id, _live_lease_absent(now), *unchanged,
        retry_count=0, next_retry_at=None, last_error=None, lease_owner=None, lease_expires_at=None,
        dispatched_at=now, updated_at=now,
    )


def requeue_many(session: Session, ids: Sequence[str], *, now: datetime, unchanged_since: datetime) -> list[str]:
    """`requeue` for a batch of a bulk job, as one guarded statement; returns the ids it reset."""
    sources, target = TRANSITIONS["requeue"]
    stmt = (
        update(events)
        .where(events.c.id.in_(list(ids)), events.c.status.in_([s.value for s in sources]), _live_lease_absent(now),
               events.c.updated_at <= unchanged_since)
        .values(status=target.value, retry_count=0, next_retry_at=None, last_error=None, lease_owner=None,
                lease_expires_at=None, dispatched_at=now, updated_at=now)
        .returning(events.c.id)
    )
    return list(session.execute(stmt).scalars())


def mark_read(session: Session, notification_id: str, *, now: datetime) -> Row | None:
    return _transition(session, "mark_read", notification_id, updated_at=now)


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.execute(select(events.c.status, func.count()).group_by(events.c.status)).all()
    counts = {s.value: 0 for s in Status}
    counts.update({status: n for status, n in rows})
    return counts


# --- sweep ------------------------------------------------------------------------------------


def try_sweep_lock(session: Session) -> bool:
    """Take the sweep lock for this transaction; False when another sweep holds it.

    PostgreSQL: a transaction-scoped advisory lock, released at commit, so replicas of beat or of
    `certctl-notify sweep` never sweep at once. SQLite (embedded mode) has one beat and its
    ``BEGIN IMMEDIATE`` already serialises writers.
    """
    if session.get_bind().dialect.name != "postgresql":
        return True
    return bool(session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": SWEEP_LOCK_KEY}).scalar())


def due_for_redispatch(session: Session, *, now: datetime, grace_seconds: float, limit: int) -> Sequence[Row]:
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
        _live_lease_absent(now),
    )
    stale = select(*columns, events.c.dispatched_at.label("due_at")).where(
        events.c.status == Status.PENDING.value,
        events.c.dispatched_at <= cutoff,
        _live_lease_absent(now),
    )
    both = union_all(overdue, stale).subquery()
    return session.execute(select(both).order_by(both.c.due_at, both.c.id).limit(limit)).all()


def mark_dispatched(session: Session, ids: Iterable[str], *, now: datetime) -> None:
    """Record that a delivery task was just published for these still-undelivered rows."""
    ids = list(ids)
    if ids:
        session.execute(
            update(events)
            .where(events.c.id.in_(ids), events.c.status.in_([Status.PENDING.value, Status.FAILED.value]))
            .values(dispatched_at=now)
        )

