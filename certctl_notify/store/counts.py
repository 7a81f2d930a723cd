"""Rows per status without counting rows: the counts triggers keep (migration 0008), read exactly.

Reading sums the folded base and the deltas appended since, in one statement (one snapshot), so a
count is exact at that snapshot; its cost is that of the deltas not yet folded, which beat folds every
few seconds (`fold_deltas`). `recount` repairs the counts from the rows themselves.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, func, select, text, union_all

from certctl_notify.model import Status, events, status_counts, status_deltas

#: How often beat folds the deltas (each state change appends one, so a read sums at most a few seconds' worth).
COUNT_FOLD_INTERVAL_SECONDS = 5.0


def count_columns() -> list:
    """One labelled scalar subquery per status (base + deltas), to select alongside other values in
    one statement, so they and the counts come from one snapshot."""
    columns = []
    for status in Status:
        parts = union_all(select(status_counts.c.n).where(status_counts.c.status == status.value),
                          select(status_deltas.c.n).where(status_deltas.c.status == status.value)).subquery()
        columns.append(select(func.coalesce(func.sum(parts.c.n), 0)).scalar_subquery().label(status.value))
    return columns


def status_counts_now(session: Connection) -> dict[str, int]:
    """Rows per status, exact, without reading notification_events."""
    row = session.execute(select(*count_columns())).one()
    return {s.value: int(getattr(row, s.value)) for s in Status}


def fold_deltas(session: Connection) -> int:
    """Move the appended deltas into the base counts in one statement; returns how many were folded.

    Two folds at once are safe: each deletes (and so adds) only delta rows the other did not take.
    """
    if session.dialect.name != "postgresql":
        return 0  # SQLite's triggers update the base counts directly
    return session.execute(text("""
        WITH moved AS (DELETE FROM notification_status_deltas RETURNING status, n),
             summed AS (SELECT status, sum(n) AS n, count(*) AS rows FROM moved GROUP BY status),
             applied AS (UPDATE notification_status_counts c SET n = c.n + s.n FROM summed s
                         WHERE c.status = s.status RETURNING 1)
        SELECT coalesce(sum(rows), 0) FROM summed
    """)).scalar_one()


def recount(session: Connection) -> tuple[dict[str, int], dict[str, int]]:
    """Count the rows themselves and make the maintained counts say the same; returns (before, after).

    On PostgreSQL it holds off writers (SHARE lock) for one scan of notification_events, so the count
    and the reset see the same rows: a repair for an operator, not something to run on a schedule.
    """
    if session.dialect.name == "postgresql":
        session.execute(text("LOCK TABLE notification_events IN SHARE MODE"))
    before = status_counts_now(session)
    actual = {s.value: 0 for s in Status}
    actual.update(dict(session.execute(select(events.c.status, func.count()).group_by(events.c.status)).all()))
    session.execute(delete(status_deltas))
    for status, n in actual.items():
        updated = session.execute(status_counts.update().where(status_counts.c.status == status).values(n=n))
        if updated.rowcount == 0:
            session.execute(status_counts.insert().values(status=status, n=n))
    return before, actual


