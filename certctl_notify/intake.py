"""Intake: validate an alert, store one pending row per channel, commit, then publish.

A failed publish leaves the committed pending row for the sweep: nothing is lost, only delayed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError

from certctl_notify import store
from certctl_notify.alerts import parse_alert
from certctl_notify.audit import Actor
from certctl_notify.db import Transactions, retry_on_disconnect
from certctl_notify.model import utcnow
from certctl_notify.publish import Dispatcher, dispatch_quietly

log = logging.getLogger(__name__)


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
        with sessions.begin() as session:
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
            dispatch_quietly(dispatcher, result.row.id, 1, result.row.dispatched_at)
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
