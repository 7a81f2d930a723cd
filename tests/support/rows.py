"""Reading rows back in tests: one short transaction each, as an operator's query would."""

from __future__ import annotations

from sqlalchemy import text

from certctl_notify import store


def row_of(sessions, notification_id):
    with sessions.begin() as s:
        return store.get(s, notification_id)


def attempts_of(sessions, notification_id):
    with sessions.begin() as s:
        return store.list_attempts(s, notification_id)


def settled(sessions, notification_id, *statuses):
    """A `wait_for` predicate: the row, once its status is one of ``statuses``."""
    return lambda: (row := row_of(sessions, notification_id)) is not None and row.status in statuses and row


def insert_dead_in_bulk(sessions, count: int, *, channel: str) -> None:
    """``count`` dead rows on ``channel``, one second apart, in one SQL statement (generate_series)."""
    with sessions.begin() as s:
        s.execute(text("""
            INSERT INTO notification_events (id, type, channel, recipient, message, status, retry_count,
                                             created_at, updated_at)
            SELECT 'notif_bulk_' || g, 'RenewalFailure', :channel, '', 'm', 'dead', 5,
                   now() - g * interval '1 second', now() - g * interval '1 second'
            FROM generate_series(1, :count) g"""), {"channel": channel, "count": count})
