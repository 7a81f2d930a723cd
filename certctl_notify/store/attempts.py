"""The attempt records: one row per delivery attempt, opened at its claim and closed with its outcome."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Row, bindparam, select, update

from certctl_notify.model import Outcome, attempts

#: Longest ``last_error`` / attempt error kept, in characters.
MAX_ERROR_CHARS = 2000


def cap(error: str | None) -> str | None:
    """``error`` cut to `MAX_ERROR_CHARS`."""
    if error is None or len(error) <= MAX_ERROR_CHARS:
        return error
    return error[: MAX_ERROR_CHARS - 1] + "…"


def list_attempts(session: Connection, notification_id: str) -> Sequence[Row]:
    stmt = select(attempts).where(attempts.c.notification_id == notification_id).order_by(attempts.c.id)
    return session.execute(stmt).all()


@functools.cache
def _open_statement():
    return attempts.insert().returning(attempts.c.id)


def open_attempt(session: Connection, notification_id: str, *, attempt: int, now: datetime, worker: str,
                 task_id: str | None, channel: str | None = None) -> int:
    """Open the record of ``attempt`` (on SQLite; PostgreSQL opens it in the claim's statement)."""
    return session.execute(_open_statement(), {
        "notification_id": notification_id, "attempt": attempt, "started_at": now, "worker": worker,
        "task_id": task_id, "channel": channel}).scalar_one()


@functools.cache  # every attempt runs it (see store/transitions.py)
def finish_statement(id_param: str = "b_id"):
    """Close one attempt record (its id bound as ``id_param``) with its outcome."""
    return (
        update(attempts)
        .where(attempts.c.id == bindparam(id_param))
        .values(finished_at=bindparam("b_now"), outcome=bindparam("b_outcome"),
                error_class=bindparam("b_error_class"), error=bindparam("b_error"),
                status_code=bindparam("b_status_code"), duration_ms=bindparam("b_duration_ms"))
    )


def finish_attempt(
    session: Connection,
    notification_id: str,
    *,
    attempt: int,
    task_id: str | None,
    now: datetime,
    outcome: Outcome,
    error_class: str | None = None,
    error: str | None = None,
    status_code: int | None = None,
    attempt_id: int | None = None,
    started_at: datetime | None = None,
) -> float | None:
    """Close the open attempt record of ``attempt`` with its outcome: by ``attempt_id`` when the
    caller holds the claim, else found by notification, attempt number and task id.

    Returns:
        The attempt's duration in seconds, or None when no open record was found.
    """
    if attempt_id is None:
        found = session.execute(
            select(attempts.c.id, attempts.c.started_at).where(
                attempts.c.notification_id == notification_id,
                attempts.c.attempt == attempt,
                attempts.c.task_id == task_id,
                attempts.c.finished_at.is_(None),
            ).order_by(attempts.c.id.desc()).limit(1)
        ).first()
        if found is None:
            return None
        attempt_id, started_at = found
    seconds = max(0.0, (now - started_at).total_seconds()) if started_at else None
    session.execute(finish_statement(), {
        "b_id": attempt_id, "b_now": now, "b_outcome": outcome.value, "b_error_class": error_class,
        "b_error": cap(error), "b_status_code": status_code,
        "b_duration_ms": int(seconds * 1000) if seconds is not None else None})
    return seconds
