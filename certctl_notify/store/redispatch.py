"""What the sweep re-publishes: the rows the broker should have delivered by now, and the stamp that
says a delivery task was just published for them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, Row, or_, select, union_all, update

from certctl_notify.model import Status, events
from certctl_notify.store.transitions import no_live_lease


def due_for_redispatch(session: Connection, *, now: datetime, grace_seconds: float, limit: int,
                       queued_since: datetime | None = None) -> Sequence[Row]:
    """Rows the broker should have delivered by now, oldest due first.

    - failed rows whose retry is overdue by more than the grace (the broker lost the retry message);
    - pending rows published more than the grace ago and never claimed (lost intake or requeue);
    - either kind whose claim lease has expired (a worker died mid-attempt).

    With ``queued_since`` (the stamp of the oldest delivery message still queued), a row whose last
    publish is at or after it is left alone unless its lease expired: its message may still wait in
    the backlog (a released retry as much as a first attempt).

    Each branch walks its own partial index, so the cost follows the due rows, not the table.
    """
    cutoff = now - timedelta(seconds=grace_seconds)
    columns = [events.c.id, events.c.status, events.c.retry_count, events.c.lease_expires_at]

    def lost(*never_published) -> tuple:
        if queued_since is None:
            return ()
        return (or_(events.c.lease_expires_at.is_not(None), events.c.dispatched_at < queued_since, *never_published),)

    overdue = select(*columns, events.c.next_retry_at.label("due_at")).where(
        events.c.status == Status.FAILED.value,
        events.c.next_retry_at.is_not(None),
        events.c.next_retry_at <= cutoff,
        or_(events.c.dispatched_at.is_(None), events.c.dispatched_at <= cutoff),
        no_live_lease(),
        *lost(events.c.dispatched_at.is_(None)),
    )
    stale = select(*columns, events.c.dispatched_at.label("due_at")).where(
        events.c.status == Status.PENDING.value,
        events.c.dispatched_at <= cutoff,
        no_live_lease(),
        *lost(),
    )
    both = union_all(overdue, stale).subquery()
    return session.execute(select(both).order_by(both.c.due_at, both.c.id).limit(limit)).all()


def take_due_retries(session: Connection, *, now: datetime, limit: int) -> Sequence[Row]:
    """Take up to ``limit`` failed rows whose retry waits here and is due, oldest due first, and stamp
    them as published now: (id, retry_count, dispatched_at) to publish after the commit.

    A retry waits here when ``dispatched_at`` is before ``next_retry_at`` (`transitions.mark_failed`
    with ``held=False``); the stamp ends that, so each is released once. Rows another releaser has
    locked are skipped. The partial index on ``next_retry_at`` of failed rows keeps it O(due rows).
    """
    due = (
        select(events.c.id)
        .where(events.c.status == Status.FAILED.value, events.c.next_retry_at.is_not(None),
               events.c.next_retry_at <= now, events.c.dispatched_at < events.c.next_retry_at, no_live_lease())
        .order_by(events.c.next_retry_at, events.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return session.execute(
        update(events).where(events.c.id.in_(due.scalar_subquery())).values(dispatched_at=now)
        .returning(events.c.id, events.c.retry_count, events.c.dispatched_at)
    ).all()


def mark_dispatched(session: Connection, ids: Iterable[str], *, now: datetime) -> None:
    """Record that a delivery task was just published for these still-undelivered rows."""
    ids = list(ids)
    if ids:
        session.execute(
            update(events)
            .where(events.c.id.in_(ids), events.c.status.in_([Status.PENDING.value, Status.FAILED.value]))
            .values(dispatched_at=now)
        )
