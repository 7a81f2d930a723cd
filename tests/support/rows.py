"""Reading rows back in tests: one short transaction each, as an operator's query would."""

from __future__ import annotations

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
