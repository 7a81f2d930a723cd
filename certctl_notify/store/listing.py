"""Read-side queries: filtered listings with true totals, the counts operators watch, and the rows a
filter matches (for bulk requeue)."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sqlalchemy import Connection, Row, func, select, tuple_

from certctl_notify.model import Status, events
from certctl_notify.store.counts import count_columns, status_counts_now

#: Most rows a filtered total counts; past it the total is reported as a lower bound ("10,000+").
TOTAL_CAP = 10_000


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
        # only rows with an error can match: the partial index on them is walked, not the table
        clauses.append(events.c.last_error.is_not(None))
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


@dataclass(frozen=True)
class Listing:
    """One page of a listing and what is known of the whole."""

    rows: Sequence[Row]
    total: int
    total_exact: bool  #: False: ``total`` is a lower bound (the filter matched more than `TOTAL_CAP` rows)
    next_cursor: str | None  #: where the next page starts (keyset), None on the last page


def encode_cursor(row: Row) -> str:
    """An opaque position after ``row`` in the order ``created_at DESC, id DESC``."""
    raw = f"{row.created_at.astimezone(UTC).isoformat()}|{row.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises:
        ValueError: not a cursor this service made.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, _, notification_id = raw.partition("|")
        created_at = datetime.fromisoformat(moment)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this service returned") from None
    if not notification_id or created_at.tzinfo is None:
        raise ValueError("cursor is not one this service returned")
    return created_at, notification_id


def _total(session: Connection, f: NotificationFilter) -> tuple[int, bool]:
    """The filter's total: exact from the maintained counts when only statuses (and ``as_of``) filter,
    else counted up to `TOTAL_CAP` (past it, a lower bound), so no request counts the whole table."""
    if not filter_clauses(replace(f, statuses=(), as_of=None)):
        counts = status_counts_now(session)
        total = sum(counts[s] for s in f.statuses) if f.statuses else sum(counts.values())
        if f.as_of is not None:  # rows newer than the pinned moment: an index range, not the table
            newer = [events.c.created_at > f.as_of] + ([events.c.status.in_(f.statuses)] if f.statuses else [])
            total -= session.execute(select(func.count()).select_from(events).where(*newer)).scalar_one()
        return max(total, 0), True
    matched = select(events.c.id).where(*filter_clauses(f)).limit(TOTAL_CAP + 1).subquery()
    counted = session.execute(select(func.count()).select_from(matched)).scalar_one()
    return (TOTAL_CAP, False) if counted > TOTAL_CAP else (counted, True)


def list_notifications(
    session: Connection, f: NotificationFilter, *, per_page: int, page: int = 1, cursor: str | None = None
) -> Listing:
    """One page in the stable order ``created_at DESC, id DESC``: by ``page`` (offset) or, for deep
    pages, after ``cursor`` (keyset: page 10,000 costs what page 1 costs).

    Raises:
        ValueError: a ``cursor`` this service did not make.
    """
    where = filter_clauses(f)
    if cursor is not None:
        after = decode_cursor(cursor)
        where.append(tuple_(events.c.created_at, events.c.id) < tuple_(*after))
    total, exact = _total(session, f)
    rows = session.execute(
        select(events).where(*where).order_by(events.c.created_at.desc(), events.c.id.desc())
        .limit(per_page + 1).offset((page - 1) * per_page if cursor is None else 0)
    ).all()
    more = len(rows) > per_page
    rows = rows[:per_page]
    return Listing(rows, total, exact, encode_cursor(rows[-1]) if more else None)


def summary(session: Connection, *, now: datetime) -> dict:
    """Counts per status (maintained, no scan), the oldest pending row's age and the retries due now
    (both read from indexes: the first pending row by creation, the due part of the retry index), in
    one statement: one round trip, one snapshot."""
    oldest = (select(events.c.created_at).where(events.c.status == Status.PENDING.value)
              .order_by(events.c.created_at).limit(1).scalar_subquery().label("oldest_pending"))
    due = (select(func.count()).select_from(events).where(
        events.c.status == Status.FAILED.value, events.c.next_retry_at.is_not(None), events.c.next_retry_at <= now,
    ).scalar_subquery().label("retries_due"))
    row = session.execute(select(*count_columns(), oldest, due)).one()
    return {
        "counts": {s.value: int(getattr(row, s.value)) for s in Status},
        "oldest_pending_seconds": max(0.0, (now - row.oldest_pending).total_seconds()) if row.oldest_pending else 0.0,
        "retries_due": row.retries_due,
    }


def count_matching(session: Connection, f: NotificationFilter, *, unchanged_since: datetime | None = None) -> int:
    where = filter_clauses(f)
    if unchanged_since is not None:
        where.append(events.c.updated_at <= unchanged_since)
    return session.execute(select(func.count()).select_from(events).where(*where)).scalar_one()


def counts_by_status(session: Connection, f: NotificationFilter) -> tuple[dict[str, int], frozenset[str]]:
    """Rows per status among those ``f`` matches (its ``statuses`` ignored), for the console's tabs, and
    the statuses whose count is a lower bound.

    Unfiltered, these are the maintained counts (exact, no scan); a filter counts each status's matches
    up to `TOTAL_CAP`.
    """
    where = filter_clauses(replace(f, statuses=()))
    if not where:
        return status_counts_now(session), frozenset()
    counts, capped = {}, set()
    for status in Status:
        matched = select(events.c.id).where(*where, events.c.status == status.value).limit(TOTAL_CAP + 1)
        n = session.execute(select(func.count()).select_from(matched.subquery())).scalar_one()
        counts[status.value] = min(n, TOTAL_CAP)
        if n > TOTAL_CAP:
            capped.add(status.value)
    return counts, frozenset(capped)
