"""Retention's statements: the rows of one status past their age, counted or deleted a batch at a time.

A batch is a range of ``idx_notification_events_status_updated`` (status, updated_at), oldest first,
so it reads the rows it deletes and nothing else, whatever the table's size. Their attempts go with
them through the foreign key (ON DELETE CASCADE), and the count triggers (migration 0008) count the
delete like any other.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, func, select

from certctl_notify.model import Status, events

#: The only statuses a row can be purged from: final ones. Pending and failed rows are alerts still to
#: be delivered, however old; every delete below repeats this list in its own WHERE.
PURGEABLE = (Status.SENT.value, Status.READ.value, Status.DEAD.value)


def _final(status: str) -> tuple:
    if status not in PURGEABLE:
        raise ValueError(f"rows in status {status!r} are never purged (only {', '.join(PURGEABLE)})")
    return events.c.status.in_(PURGEABLE), events.c.status == status


def count_purgeable(session: Connection, status: str, *, before: datetime) -> int:
    """Rows of ``status`` last changed before ``before`` (what a purge would delete now)."""
    where = (*_final(status), events.c.updated_at < before)
    return session.execute(select(func.count()).select_from(events).where(*where)).scalar_one()


def purge_batch(session: Connection, status: str, *, before: datetime, after: datetime | None = None,
                limit: int) -> list[datetime]:
    """Delete up to ``limit`` rows of ``status`` last changed before ``before``, oldest first, with their
    attempts; returns the deleted rows' ``updated_at``.

    ``after`` (the newest ``updated_at`` of the previous batch) starts the index range there, so a run
    does not walk again over the entries of the rows it already deleted (dead until vacuum). On
    PostgreSQL rows another transaction holds are skipped (``SKIP LOCKED``), not waited for: a purge
    never queues behind a worker or an operator, and two purges at once share the work.

    Raises:
        ValueError: for a status that is never purged (pending, failed).
    """
    final = _final(status)
    chosen = select(events.c.id).where(*final, events.c.updated_at < before)
    if after is not None:
        chosen = chosen.where(events.c.updated_at >= after)
    # FOR UPDATE (PostgreSQL only) locks the chosen rows, re-checked on their latest version, so none
    # can leave its final state before the delete; the status is checked again there all the same.
    # The age is not: with it PostgreSQL may plan the delete as a scan of every due row instead of
    # one primary-key lookup per chosen row.
    # A materialised CTE, not a subquery: PostgreSQL may rescan an IN subquery once per candidate row,
    # and each rescan's SKIP LOCKED passes over the rows already deleted and takes the next ones, so
    # the LIMIT would bound nothing (a batch of 10 deleted all 25 rows due in a test).
    chosen = (chosen.order_by(events.c.updated_at).limit(limit).with_for_update(skip_locked=True)
              .cte("chosen").prefix_with("MATERIALIZED"))
    return list(session.execute(delete(events).where(events.c.id.in_(select(chosen.c.id)), *final)
                                .add_cte(chosen).returning(events.c.updated_at)).scalars())
