"""How times, durations and attempt numbers read to people: the console and the command line say them
alike. No imports beyond the standard library and `vocabulary`, so the command line loads it cheaply.
"""

from __future__ import annotations

from datetime import UTC, datetime

from certctl_notify.vocabulary import Status


def fmt_time(moment: datetime | None, *, zone: bool = True) -> str:
    """``2026-12-03 18:24:44 UTC`` (times shown to people are UTC; ``zone=False`` where a heading says so)."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" + (" UTC" if zone else ""))


def fmt_seconds(seconds: float | None) -> str:
    """A duration as people say it: ``850 ms``, ``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    whole = int(seconds)
    for size, unit, small, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "min"), (60, "min", 1, "s")):
        if whole >= size:
            rest = (whole % size) // small
            return f"{whole // size} {unit}" + (f" {rest} {small_unit}" if rest else "")
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def attempt_number(status: str, retry_count: int, sent_at: object | None) -> int:
    """The attempt a notification is at: the one running or queued (pending), the one that delivered
    it, or the last one made (failed, dead, or read without having been delivered).

    ``retry_count`` counts failed attempts; ``sent_at`` is set (of any type) once it was delivered.
    """
    delivered = sent_at is not None and status in (Status.SENT.value, Status.READ.value)
    return retry_count + 1 if status == Status.PENDING.value or delivered else retry_count
