"""The producer and operator client: enqueue an alert, requeue a dead one.

Each function frames its own short transaction with the given session factory, commits, and only
then publishes (commit, then publish): a failed publish leaves a pending row for the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row
from sqlalchemy.exc import IntegrityError

from certctl_notify import store
from certctl_notify.alerts import parse_alert
from certctl_notify.db import Transactions, retry_on_disconnect
from certctl_notify.errors import NotFound, WrongState
from certctl_notify.metrics import NO_METRICS, Recorder
from certctl_notify.model import TRANSITIONS, utcnow
from certctl_notify.publish import Dispatcher, dispatch_quietly

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who acts, for the audit log: an API key's name, ``cli:<user>`` or ``broker``."""

    name: str
    request_id: str | None = None


def record_audit(
    session: Connection, actor: Actor | None, action: str, target: str, at: datetime, detail=None
) -> None:
    """Write an audit row in the caller's transaction, so the action and its record commit together."""
    if actor is not None:
        store.add_audit(session, at=at, actor=actor.name, action=action, target=target, detail=detail,
                        request_id=actor.request_id)


@dataclass(frozen=True)
class Enqueued:
    row: Row
    created: bool  #: False when a repeated dedupe_key returned the existing row


def enqueue_alert(
    sessions: Transactions,
    dispatcher: Dispatcher,
    fields: Mapping[str, Any],
    *,
    actor: Actor | None = None,
    source: str | None = None,
    now: Callable[[], datetime] = utcnow,
) -> list[Enqueued]:
    """Validate, store one pending row per channel, commit, then publish each new row's first attempt.

    ``source`` names the message the alert came in (the Celery task id of ``certctl_notify.enqueue``):
    handling it again — a redelivery after a worker died before acknowledging it, or Celery's retry —
    finds the rows the first time stored (``created`` False) instead of storing the alert twice.

    A database connection found cut is retried once on a new one. If the first try did commit, the
    retry meets its own rows' primary keys: those rows are returned as not created, and the sweep
    publishes them if nobody did.

    Raises:
        ValidationError: on bad input; nothing is written.
    """
    alert = parse_alert(fields)
    moment = now()
    rows = alert.rows(moment, source=source)

    def store_rows() -> list[Enqueued]:
        results: list[Enqueued] = []
        # One row is one statement (with its audit entry on PostgreSQL): no explicit transaction needed.
        with (sessions.statement() if len(rows) == 1 else sessions.begin()) as session:
            for row in rows:
                if actor is None:
                    inserted = store.insert_notification(session, row)
                else:
                    inserted = store.insert_notification_audited(session, row, {
                        "at": moment, "actor": actor.name, "action": "enqueue", "request_id": actor.request_id,
                        "detail": {"channel": row["channel"], "type": row["type"]}})
                if inserted is None:
                    existing = store.get_by_dedupe_key(session, row["dedupe_key"], row["channel"])
                    results.append(Enqueued(existing, created=False))
                else:
                    results.append(Enqueued(inserted, created=True))
        return results

    try:
        results = retry_on_disconnect(store_rows, f"enqueue {alert.type.value}")
    except IntegrityError:
        results = _stored_before(sessions, rows)
        if results is None:  # another constraint: not ours to explain away
            raise
    for result in results:
        if result.created:
            dispatch_quietly(dispatcher, result.row.id, 1)
            log.info("enqueued %s %s via %s", result.row.id, result.row.type, result.row.channel)
        else:
            log.info("dedupe_key %r matched %s; nothing new sent", result.row.dedupe_key, result.row.id)
    return results


def _stored_before(sessions: Transactions, rows: list[dict]) -> list[Enqueued] | None:
    """The rows with these ids, as not created, when every one of them exists already; else None."""
    with sessions.begin() as session:
        found = [store.get(session, row["id"]) for row in rows]
    if any(row is None for row in found):
        return None
    log.info("%s stored before (the same message again); nothing new sent", ", ".join(r.id for r in found))
    return [Enqueued(row, created=False) for row in found]


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
    dispatch_quietly(dispatcher, notification_id, 1)
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
