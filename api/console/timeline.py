"""A notification's attempts as a timeline: each attempt with the wait before it, requeues marked."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row

from certctl_notify.model import Status


@dataclass(frozen=True)
class Step:
    """One attempt, or the retry still to come (``attempt`` is then the next attempt's number)."""

    attempt: int
    started_at: datetime | None
    record: Row | None  #: the attempt record; None for the retry still waiting
    wait_seconds: float | None  #: from the previous attempt's end to this one's start (or its due time)
    after_requeue: bool = False  #: the budget was restored by a requeue before this attempt


def build(row: Row, attempts: list[Row]) -> list[Step]:
    """The timeline of ``row``: its attempt records in order, then its pending retry if it has one."""
    steps: list[Step] = []
    previous = None
    for record in attempts:
        requeued = previous is not None and record.attempt <= previous.attempt
        wait = None
        if previous is not None and not requeued and previous.finished_at is not None:
            wait = max(0.0, (record.started_at - previous.finished_at).total_seconds())
        steps.append(Step(record.attempt, record.started_at, record, wait, requeued))
        previous = record
    if row.status == Status.FAILED.value and row.next_retry_at is not None:
        since = previous.finished_at if previous is not None and previous.finished_at else None
        wait = max(0.0, (row.next_retry_at - since).total_seconds()) if since else None
        steps.append(Step(row.retry_count + 1, row.next_retry_at, None, wait))
    return steps
