"""Every change of a notification's status, and the claim that precedes each delivery attempt.

A status change is built one way, `guarded`: one ``UPDATE … WHERE id … AND status IN (<the transition's
sources>) … RETURNING`` from `model.TRANSITIONS`. Zero rows is a normal answer that the caller turns
into a 409, a skip or a no-op, so a late or duplicate writer cannot undo another's work. Functions
take a `Connection` and never commit: the caller frames the transaction.

The statements every delivery runs (claim, sent, retry, dead) are built once with bound parameters
(`functools.cache`): building a statement and its cache key costs about as much CPU as running it,
and in one run of ``bench/throughput.py`` building them per call cost 35 % of notifications/s.
"""

from __future__ import annotations

import functools
from collections import namedtuple
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Row, Update, bindparam, or_, select, update

from certctl_notify.model import TRANSITIONS, Outcome, Status, attempts, events
from certctl_notify.store.attempts import cap, finish_attempt, finish_statement, open_attempt
from certctl_notify.store.dialect import db_now, db_now_plus, one_statement

_UNDELIVERED = (Status.PENDING.value, Status.FAILED.value)
#: What every delivery outcome clears: the claim that allowed it.
_RELEASED = {"lease_owner": None, "lease_expires_at": None}


def guarded(name: str, *where) -> Update:
    """The transition ``name`` of `TRANSITIONS` as one UPDATE that applies only from its source statuses
    (and where ``where`` holds); add ``.values(...)`` for the other columns and ``.returning(...)``."""
    sources, target = TRANSITIONS[name]
    return update(events).where(events.c.status.in_([s.value for s in sources]), *where).values(status=target.value)


def no_live_lease():
    """No attempt holds the row: no lease, or one that ran out by the database's clock."""
    return or_(events.c.lease_expires_at.is_(None), events.c.lease_expires_at < db_now())


def _leased(name: str) -> Update:
    """A delivery outcome: the transition, applied only by the execution that holds the claim."""
    return guarded(name, events.c.id == bindparam("b_id"), events.c.lease_owner == bindparam("b_token")).returning(
        *events.c)


# --- the claim --------------------------------------------------------------------------------------


@functools.cache
def _claim_update() -> Update:
    return (
        update(events)
        .where(
            events.c.id == bindparam("b_id"),
            events.c.status.in_(_UNDELIVERED),
            events.c.retry_count == bindparam("b_failures"),
            no_live_lease(),
        )
        .values(lease_owner=bindparam("b_token"), lease_expires_at=db_now_plus("b_lease_seconds"),
                updated_at=bindparam("b_now"))
        .returning(*events.c)
    )


@functools.cache
def _claim_and_open():
    """The claim and its attempt record in one statement (data-modifying CTEs)."""
    claimed = _claim_update().cte("claimed")
    opened = (
        attempts.insert()
        .from_select(
            ["notification_id", "attempt", "started_at", "worker", "task_id", "channel"],
            select(claimed.c.id, bindparam("b_attempt", type_=attempts.c.attempt.type),
                   bindparam("b_now", type_=attempts.c.started_at.type),
                   bindparam("b_worker", type_=attempts.c.worker.type),
                   bindparam("b_task_id", type_=attempts.c.task_id.type), claimed.c.channel),
        )
        .returning(attempts.c.id.label("attempt_id"), attempts.c.notification_id)
        .cte("opened")
    )
    return select(claimed, opened.c.attempt_id).select_from(
        claimed.join(opened, opened.c.notification_id == claimed.c.id))


ClaimedRow = namedtuple("ClaimedRow", [*(c.name for c in events.c), "attempt_id"])


def claim(session: Connection, notification_id: str, *, attempt: int, token: str, now: datetime,
          lease_seconds: float, worker: str, task_id: str | None) -> Row | ClaimedRow | None:
    """Claim attempt ``attempt`` of a row and open its attempt record (one round trip where the
    database allows it).

    Only a pending/failed row with exactly ``attempt - 1`` failures and no live lease can be claimed,
    so a duplicated or stale message (or the sweep racing the broker's retry) finds nothing to do.
    The lease runs ``lease_seconds`` on the database's clock, whatever this host's clock says;
    ``now`` stamps the attempt's start.

    Returns:
        The claimed row plus ``attempt_id`` (its open attempt record), or None when the message has
        nothing to deliver.
    """
    params = {"b_id": notification_id, "b_failures": attempt - 1, "b_now": now, "b_token": token,
              "b_lease_seconds": lease_seconds, "b_attempt": attempt, "b_worker": worker, "b_task_id": task_id}
    if one_statement(session):
        return session.execute(_claim_and_open(), params).first()
    row = session.execute(_claim_update(), params).first()
    if row is None:
        return None
    attempt_id = open_attempt(session, notification_id, attempt=attempt, now=now, worker=worker, task_id=task_id,
                              channel=row.channel)
    return ClaimedRow(*row, attempt_id)


# --- delivery outcomes ------------------------------------------------------------------------------


@functools.cache
def _sent() -> Update:
    return _leased("deliver_sent").values(
        sent_at=bindparam("b_now"), next_retry_at=None, last_error=None, updated_at=bindparam("b_now"),
        **_RELEASED)


@functools.cache
def _sent_and_finished():
    """`_sent` with the attempt record's closing in one statement (a data-modifying CTE)."""
    return _sent().add_cte(finish_statement("b_attempt_id").cte("finished"))


def mark_sent(session: Connection, notification_id: str, *, token: str, now: datetime) -> Row | None:
    """Delivered: ``sent_at`` set, retry bookkeeping cleared, ``retry_count`` left as the history."""
    return session.execute(_sent(), {"b_id": notification_id, "b_token": token, "b_now": now}).first()


def record_sent(session: Connection, notification_id: str, *, token: str, now: datetime, attempt_id: int,
                started_at: datetime, status_code: int | None) -> tuple[Row | None, float]:
    """Close the attempt record as sent and mark the row sent (one statement where the database allows).

    Returns:
        (the sent row, or None when the claim was lost; the attempt's duration in seconds)
    """
    seconds = max(0.0, (now - started_at).total_seconds())
    if not one_statement(session):
        finish_attempt(session, notification_id, attempt=0, task_id=None, now=now, outcome=Outcome.SENT,
                       status_code=status_code, attempt_id=attempt_id, started_at=started_at)
        return mark_sent(session, notification_id, token=token, now=now), seconds
    row = session.execute(_sent_and_finished(), {
        "b_id": notification_id, "b_attempt_id": attempt_id, "b_token": token, "b_now": now,
        "b_outcome": Outcome.SENT.value,
        "b_error_class": None, "b_error": None, "b_status_code": status_code,
        "b_duration_ms": int(seconds * 1000)}).first()
    return row, seconds


@functools.cache
def _failed() -> Update:
    return _leased("deliver_retry").values(
        retry_count=bindparam("b_failures"), next_retry_at=bindparam("b_next_retry_at"),
        last_error=bindparam("b_error"), dispatched_at=bindparam("b_dispatched_at"), updated_at=bindparam("b_now"),
        **_RELEASED)


@functools.cache
def _dead() -> Update:
    return _leased("deliver_dead").values(
        retry_count=bindparam("b_failures"), next_retry_at=None, last_error=bindparam("b_error"),
        updated_at=bindparam("b_now"), **_RELEASED)


def mark_failed(session: Connection, notification_id: str, *, token: str, failures: int, next_retry_at: datetime,
                error: str, now: datetime, held: bool = True) -> Row | None:
    """A transient failure with budget left: count, error and next step written together.

    ``held``: the worker holds the retry as a countdown message, published for ``next_retry_at``
    (``dispatched_at`` says so); otherwise the retry waits here, ``dispatched_at`` before
    ``next_retry_at``, until `certctl_notify.release.release_due_retries` publishes it.
    """
    return session.execute(_failed(), {
        "b_id": notification_id, "b_token": token, "b_failures": failures, "b_next_retry_at": next_retry_at,
        "b_error": cap(error), "b_now": now, "b_dispatched_at": next_retry_at if held else now}).first()


def mark_dead(session: Connection, notification_id: str, *, token: str, failures: int, error: str,
              now: datetime) -> Row | None:
    """Budget spent or a permanent error: the dead letter an operator sees and can requeue."""
    return session.execute(_dead(), {"b_id": notification_id, "b_token": token, "b_failures": failures,
                                     "b_error": cap(error), "b_now": now}).first()


# --- operator actions -------------------------------------------------------------------------------


def _requeue(*where, now: datetime) -> Update:
    """Reset to a fresh pending row (budget restored), refused while an attempt holds a live lease."""
    return guarded("requeue", no_live_lease(), *where).values(
        retry_count=0, next_retry_at=None, last_error=None, dispatched_at=now, updated_at=now, **_RELEASED)


def requeue(session: Connection, notification_id: str, *, now: datetime) -> Row | None:
    """Requeue one dead or failed row; None when it is not dead/failed or an attempt is in progress."""
    return session.execute(_requeue(events.c.id == notification_id, now=now).returning(*events.c)).first()


def requeue_many(session: Connection, ids: Sequence[str], *, now: datetime, unchanged_since: datetime) -> list[str]:
    """`requeue` for a batch of a bulk job, as one statement, skipping rows that changed after
    ``unchanged_since``; returns the ids it reset."""
    stmt = _requeue(events.c.id.in_(list(ids)), events.c.updated_at <= unchanged_since, now=now)
    return list(session.execute(stmt.returning(events.c.id)).scalars())


def mark_read(session: Connection, notification_id: str, *, now: datetime) -> Row | None:
    """Acknowledge a sent row or dismiss a dead one; None from any other status."""
    stmt = guarded("mark_read", events.c.id == notification_id).values(updated_at=now).returning(*events.c)
    return session.execute(stmt).first()
