"""Read-side queries: filtered listings with true totals, the counts operators watch, and the rows a
filter matches (for bulk requeue)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import Connection, Row, func, select

from certctl_notify.model import Status, events
from certctl_notify.store.counts import status_counts_now


@dataclass(frozen=True)
class NotificationFilter:
    """Filters of the list endpoint and of bulk requeue; None means "any"."""

    statuses: tuple[str, ...] = ()
    channel: str | None = None
    type: str | None = None
    certificate_id: str | None = None
    q: str | None = None  #: substring of last_error, case-insensitive
    created_after: datetime | None = None
    created_before: datetime | None = None
    as_of: datetime | None = None  #: only rows created at or before this (stable paging)
    ids: tuple[str, ...] = ()


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def filter_clauses(f: NotificationFilter) -> list:
    clauses = []
    if f.statuses:
        clauses.append(events.c.status.in_(f.statuses))
    for column, value in ((events.c.channel, f.channel), (events.c.type, f.type),
                          (events.c.certificate_id, f.certificate_id)):
        if value is not None:
            clauses.append(column == value)
    if f.q:
        clauses.append(events.c.last_error.ilike(f"%{_escape_like(f.q)}%", escape="\\"))
    if f.created_after is not None:
        clauses.append(events.c.created_at >= f.created_after)
    if f.created_before is not None:
        clauses.append(events.c.created_at < f.created_before)
    if f.as_of is not None:
        clauses.append(events.c.created_at <= f.as_of)
    if f.ids:
        clauses.append(events.c.id.in_(f.ids))
    return clauses


def list_notifications(
    session: Connection, f: NotificationFilter, *, page: int, per_page: int
) -> tuple[int, Sequence[Row]]:
    """(true filtered total, one page) in the stable order ``created_at DESC, id DESC``."""
    where = filter_clauses(f)
    total = session.execute(select(func.count()).select_from(events).where(*where)).scalar_one()
    rows = session.execute(
        select(events).where(*where).order_by(events.c.created_at.desc(), events.c.id.desc())
        .limit(per_page).offset((page - 1) * per_page)
    ).all()
    return total, rows


def summary(session: Connection, *, now: datetime) -> dict:
    """Counts per status (maintained, no scan), the oldest pending row's age and the retries due now
    (both read from indexes: the first pending row by creation, the due part of the retry index)."""
    oldest = session.execute(select(events.c.created_at).where(events.c.status == Status.PENDING.value)
                             .order_by(events.c.created_at).limit(1)).scalar()
    due = session.execute(select(func.count()).select_from(events).where(
        events.c.status == Status.FAILED.value, events.c.next_retry_at.is_not(None), events.c.next_retry_at <= now,
    )).scalar_one()
    return {
        "counts": status_counts_now(session),
        "oldest_pending_seconds": max(0.0, (now - oldest).total_seconds()) if oldest else 0.0,
        "retries_due": due,
    }


def count_matching(session: Connection, f: NotificationFilter, *, unchanged_since: datetime | None = None) -> int:
    where = filter_clauses(f)
    if unchanged_since is not None:
        where.append(events.c.updated_at <= unchanged_since)
    return session.execute(select(func.count()).select_from(events).where(*where)).scalar_one()


def counts_by_status(session: Connection, f: NotificationFilter) -> dict[str, int]:
    """Rows per status among those ``f`` matches (its ``statuses`` ignored): the console's tab counts.

    Unfiltered, these are the maintained counts (no scan); a filter counts the rows it matches.
    """
    where = filter_clauses(replace(f, statuses=()))
    if not where:
        return status_counts_now(session)
    rows = session.execute(select(events.c.status, func.count()).where(*where).group_by(events.c.status)).all()
    counts = {s.value: 0 for s in Status}
    counts.update({status: n for status, n in rows})
    return counts
