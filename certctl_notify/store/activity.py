"""Delivery activity over time: how many attempts ended sent, retried or dead, per hour and channel
(the console's "last 24 hours" chart)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, func, select, text, union_all

from certctl_notify.model import attempt_hourly, attempt_hourly_deltas, attempts, events
from certctl_notify.store.dialect import utc_hour

_HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class OutcomeCounts:
    """How many attempts ended in each `Outcome` (fields named by its values)."""

    sent: int = 0
    retry: int = 0
    dead: int = 0

    @property
    def total(self) -> int:
        return self.sent + self.retry + self.dead

    def __add__(self, other: OutcomeCounts) -> OutcomeCounts:
        return OutcomeCounts(self.sent + other.sent, self.retry + other.retry, self.dead + other.dead)


@dataclass(frozen=True)
class HourBucket:
    """The attempts that finished in one UTC hour, ``[start, start + 1 h)``, by channel."""

    start: datetime  #: on the hour, UTC
    by_channel: Mapping[str, OutcomeCounts] = field(default_factory=dict)  #: only channels with attempts

    def counts(self, channel: str | None = None) -> OutcomeCounts:
        """The counts of one channel (zeros if it had none), or of all channels summed when None."""
        if channel is not None:
            return self.by_channel.get(channel, OutcomeCounts())
        return sum(self.by_channel.values(), OutcomeCounts())


def hourly_outcomes(session: Connection, *, now: datetime, hours: int = 24) -> list[HourBucket]:
    """Attempt outcomes per UTC hour and channel, for the ``hours`` hours up to and including ``now``'s.

    Parameters:
        now: the current time, timezone-aware; its hour is the last (partial) bucket.
        hours: how many buckets, at least 1.

    Returns:
        Exactly ``hours`` buckets, oldest first, one per hour, empty ones included (with no channels).
    """
    if now.tzinfo is None or hours < 1:
        raise ValueError(f"hourly_outcomes needs an aware now and hours >= 1, got {now!r}, {hours}")
    last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    first = last - (hours - 1) * _HOUR
    end = last + _HOUR
    if session.dialect.name == "postgresql":
        # kept by triggers as attempts finish (migration 0011): at most hours x channels x outcomes rows
        parts = union_all(
            select(attempt_hourly.c.hour, attempt_hourly.c.channel, attempt_hourly.c.outcome, attempt_hourly.c.n)
            .where(attempt_hourly.c.hour >= first, attempt_hourly.c.hour < end),
            select(attempt_hourly_deltas.c.hour, attempt_hourly_deltas.c.channel, attempt_hourly_deltas.c.outcome,
                   attempt_hourly_deltas.c.n)
            .where(attempt_hourly_deltas.c.hour >= first, attempt_hourly_deltas.c.hour < end),
        ).subquery()
        rows = session.execute(
            select(parts.c.hour, parts.c.channel, parts.c.outcome, func.sum(parts.c.n).label("n"))
            .group_by(parts.c.hour, parts.c.channel, parts.c.outcome)
        ).all()
    else:
        # SQLite (embedded, small): the window's attempts through idx_notification_attempts_finished
        hour = utc_hour(attempts.c.finished_at).label("hour")
        row_channel = select(events.c.channel).where(events.c.id == attempts.c.notification_id).scalar_subquery()
        channel = func.coalesce(attempts.c.channel, row_channel).label("channel")
        rows = session.execute(
            select(hour, channel, attempts.c.outcome, func.count().label("n"))
            .where(attempts.c.finished_at >= first, attempts.c.finished_at < end, attempts.c.outcome.is_not(None))
            .group_by(hour, channel, attempts.c.outcome)
        ).all()
    found: dict[datetime, dict[str, dict[str, int]]] = {}
    for row in rows:
        found.setdefault(row.hour.astimezone(UTC), {}).setdefault(row.channel, {})[row.outcome] = int(row.n)
    starts = [first + i * _HOUR for i in range(hours)]
    return [
        HourBucket(start, {channel: OutcomeCounts(**n) for channel, n in found.get(start, {}).items()})
        for start in starts
    ]


def last_finished_attempt(session: Connection):
    """The attempt that finished most recently (``finished_at``, ``worker``), or None: a sign of life of
    the workers that needs no broker broadcast (the embedded broker has none)."""
    return session.execute(select(attempts.c.finished_at, attempts.c.worker)
                           .where(attempts.c.finished_at.is_not(None))
                           .order_by(attempts.c.finished_at.desc()).limit(1)).first()


#: Hours of per-hour counts kept (the chart shows 24).
HOURLY_KEPT = timedelta(days=7)


def fold_hourly(session: Connection, *, now: datetime) -> int:
    """Fold the appended per-hour deltas into attempt_hourly and drop hours past `HOURLY_KEPT`; returns the
    deltas folded (PostgreSQL; two folds at once each move only the rows they deleted)."""
    if session.dialect.name != "postgresql":
        return 0
    folded = session.execute(text("""
        WITH moved AS (DELETE FROM attempt_hourly_deltas RETURNING hour, channel, outcome, n),
             summed AS (SELECT hour, channel, outcome, sum(n) AS n, count(*) AS rows FROM moved
                        GROUP BY hour, channel, outcome),
             applied AS (INSERT INTO attempt_hourly (hour, channel, outcome, n)
                         SELECT hour, channel, outcome, n FROM summed
                         ON CONFLICT (hour, channel, outcome) DO UPDATE SET n = attempt_hourly.n + EXCLUDED.n
                         RETURNING 1)
        SELECT coalesce(sum(rows), 0) FROM summed
    """)).scalar_one()
    session.execute(attempt_hourly.delete().where(attempt_hourly.c.hour < now - HOURLY_KEPT))
    return folded
