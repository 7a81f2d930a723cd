"""Releasing retries that wait in PostgreSQL: a wait longer than `RetryPolicy.held` allows is not held
by a worker as a countdown message (a channel down for an hour would make workers hold every alert's
retry in memory, and the broker's visibility timeout would have to outlast the longest wait); the row
keeps its ``next_retry_at``, and beat publishes the due ones every CERTCTL_RETRY_RELEASE_INTERVAL."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from certctl_notify import store
from certctl_notify.db import Transactions
from certctl_notify.model import utcnow
from certctl_notify.publish import Dispatcher, dispatch_quietly

log = logging.getLogger(__name__)

#: Retries released per transaction at most; a tick goes on until none is due.
RELEASE_BATCH = 500


def release_due_retries(sessions: Transactions, dispatcher: Dispatcher, *, now: Callable[[], datetime] = utcnow,
                        batch: int = RELEASE_BATCH) -> int:
    """Publish every retry waiting in PostgreSQL that is due now, in batches; returns how many.

    Each batch is stamped as published in one transaction and published after it commits; a publish
    that fails leaves its row for the sweep (an overdue retry), nothing is lost.
    """
    released = 0
    while True:
        moment = now()
        with sessions.begin() as session:
            rows = store.take_due_retries(session, now=moment, limit=batch)
        for row in rows:
            dispatch_quietly(dispatcher, row.id, row.retry_count + 1, row.dispatched_at)
        released += len(rows)
        if len(rows) < batch:
            break
    if released:
        log.info("released %d due retries", released)
    return released
