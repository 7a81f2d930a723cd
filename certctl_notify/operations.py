"""Operator actions on one notification: requeue a dead or failed one, mark one read.

Each is one guarded transition and its audit entry in one transaction; a requeue is published after
the commit (a failed publish leaves the pending row for the sweep).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Row

from certctl_notify import store
from certctl_notify.audit import Actor, record_audit
from certctl_notify.db import Transactions
from certctl_notify.errors import NotFound, WrongState
from certctl_notify.metrics import NO_METRICS, Recorder
from certctl_notify.model import TRANSITIONS, utcnow
from certctl_notify.publish import Dispatcher, dispatch_quietly

log = logging.getLogger(__name__)


def _operator_transition(sessions: Transactions, transition, action: str, notification_id: str,
                         actor: Actor | None, moment: datetime, *, refused) -> Row:
    """Apply one guarded store transition and audit it in the same transaction.

    Raises:
        NotFound: unknown id.
        WrongState: the transition did not apply; ``refused(current_row)`` says why.
    """
    with sessions.begin() as session:
        row = transition(session, notification_id, now=moment)
        if row is not None:
            record_audit(session, actor, action, notification_id, moment)
            return row
        current = store.get(session, notification_id)
    if current is None:
        raise NotFound(f"notification {notification_id} does not exist")
    raise WrongState(refused(current))


def requeue(
    sessions: Transactions,
    dispatcher: Dispatcher,
    notification_id: str,
    *,
    actor: Actor | None = None,
    now: Callable[[], datetime] = utcnow,
    metrics: Recorder = NO_METRICS,
) -> Row:
    """Reset a dead or failed row to pending (budget restored) and dispatch it at once.

    Raises:
        NotFound: unknown id.
        WrongState: not dead/failed, or an attempt is in progress right now; nothing changed.
    """
    row = _operator_transition(
        sessions, store.requeue, "requeue", notification_id, actor, now(),
        refused=lambda current: (
            f"notification {notification_id} has an attempt in progress; try again shortly"
            if current.status in TRANSITIONS["requeue"][0]
            else f"notification {notification_id} is {current.status}; only "
                 f"{', '.join(sorted(TRANSITIONS['requeue'][0]))} rows can be requeued"
        ),
    )
    log.info("requeued %s (%s) by %s", notification_id, row.channel, actor.name if actor else "operator")
    metrics.requeued("single")
    dispatch_quietly(dispatcher, notification_id, 1, row.dispatched_at)
    return row


def mark_read(
    sessions: Transactions, notification_id: str, *, actor: Actor | None = None,
    now: Callable[[], datetime] = utcnow,
) -> Row:
    """Acknowledge a sent alert or dismiss a dead letter.

    Raises:
        NotFound: unknown id.
        WrongState: pending or failed (marking it read would cancel its delivery), or already read.
    """
    row = _operator_transition(
        sessions, store.mark_read, "mark_read", notification_id, actor, now(),
        refused=lambda current: (
            f"notification {notification_id} is {current.status}; only sent or dead rows can be marked read "
            "(a pending or failed one would never be delivered)"
        ),
    )
    log.info("marked %s read by %s", notification_id, actor.name if actor else "operator")
    return row
