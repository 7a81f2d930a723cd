"""Releasing the retries that wait in PostgreSQL: due ones once each, held or future ones never."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from certctl_notify.model import events
from certctl_notify.release import release_due_retries


class Recorded:
    def __init__(self):
        self.published: list[tuple[str, int]] = []

    def dispatch(self, notification_id: str, attempt: int, dispatched_at=None) -> None:
        self.published.append((notification_id, attempt))


def add_failed(sessions, nid: str, *, next_retry_at: datetime, dispatched_at: datetime, retry_count: int = 2):
    at = datetime.now(UTC) - timedelta(hours=1)
    with sessions.begin() as s:
        s.execute(events.insert().values(
            id=nid, type="RenewalFailure", channel="Webhook", recipient="", message="m", status="failed",
            retry_count=retry_count, next_retry_at=next_retry_at, dispatched_at=dispatched_at, created_at=at,
            updated_at=at))


def test_due_waiting_retries_are_released_once_and_nothing_else_is(sessions):
    now = datetime.now(UTC)
    # Given retries waiting in PostgreSQL (dispatched before their time): two due, one not yet;
    # and one held by a worker as a countdown (dispatched for its time), due too
    add_failed(sessions, "n-due-1", next_retry_at=now - timedelta(seconds=2), dispatched_at=now - timedelta(minutes=1))
    add_failed(sessions, "n-due-2", next_retry_at=now - timedelta(seconds=1), dispatched_at=now - timedelta(minutes=1),
               retry_count=3)
    add_failed(sessions, "n-later", next_retry_at=now + timedelta(minutes=1), dispatched_at=now - timedelta(seconds=5))
    add_failed(sessions, "n-held", next_retry_at=now - timedelta(seconds=1), dispatched_at=now - timedelta(seconds=1))
    dispatcher = Recorded()
    # When the due retries are released, in batches of one
    assert release_due_retries(sessions, dispatcher, batch=1) == 2
    # Then each due one is published for its next attempt, oldest due first, and a second release finds none
    assert dispatcher.published == [("n-due-1", 3), ("n-due-2", 4)]
    assert release_due_retries(sessions, dispatcher) == 0
