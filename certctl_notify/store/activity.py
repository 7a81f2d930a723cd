"""Delivery activity over time: how many attempts ended sent, retried or dead, per hour and channel
(the console's "last 24 hours" chart)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, func, select

from certctl_notify.model import attempts, events
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
    hour = utc_hour(attempts.c.finished_at).label("hour")
    # The attempt carries its row's channel (migration 0010), so only the window's attempts are read;
    # an attempt recorded by an older worker without it looks its row up (COALESCE stops at the first).
    row_channel = select(events.c.channel).where(events.c.id == attempts.c.notification_id).scalar_subquery()
    channel = func.coalesce(attempts.c.channel, row_channel).label("channel")
    # One grouped statement; the range on the bare column lets idx_notification_attempts_finished
    # read only the window, however long the attempt history is.
    rows = session.execute(
        select(hour, channel, attempts.c.outcome, func.count().label("n"))
        .where(attempts.c.finished_at >= first, attempts.c.finished_at < last + _HOUR)
        .group_by(hour, channel, attempts.c.outcome)
    ).all()
    found: dict[datetime, dict[str, dict[str, int]]] = {}
    for row in rows:
        found.setdefault(row.hour, {}).setdefault(row.channel, {})[row.outcome] = row.n
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
