"""Bulk requeue jobs against real PostgreSQL: one owner per job, and the job recorded with its audit entry."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

from certctl_notify import bulk, store
from certctl_notify.audit import Actor
from certctl_notify.model import events
from certctl_notify.settings import SweepSettings
from certctl_notify.store.listing import NotificationFilter
from certctl_notify.sweep import sweep_once

DEAD = NotificationFilter(statuses=("dead",))


class Recorded:
    """Remembers what it was asked to publish: deliveries, and the argument lists of job chunks."""

    def __init__(self):
        self.deliveries: list[str] = []
        self.chunks: list[tuple] = []

    def dispatch(self, notification_id: str, attempt: int, dispatched_at=None) -> None:
        self.deliveries.append(notification_id)

    def dispatch_many(self, notification_ids, attempt: int, dispatched_at=None) -> None:
        self.deliveries.extend(notification_ids)

    def run_requeue_job(self, *args) -> None:
        self.chunks.append(args)

    def oldest_queued_dispatch(self):
        return None  # an empty queue


def add_dead(sessions, count: int) -> None:
    past = datetime.now(UTC) - timedelta(hours=1)
    with sessions.begin() as s:
        s.execute(events.insert(), [
            {"id": f"notif_{i:04d}_{uuid.uuid4().hex[:6]}", "type": "RenewalFailure", "channel": "Webhook",
             "recipient": "", "message": "m", "status": "dead", "retry_count": 5, "created_at": past,
             "updated_at": past} for i in range(count)])


def test_a_stalled_looking_job_resumed_by_the_sweep_has_one_owner(sessions):
    # Given a bulk requeue of 300 dead rows whose first chunk message waits behind a busy queue
    add_dead(sessions, 300)
    dispatcher = Recorded()
    job = bulk.start(sessions, dispatcher, DEAD, rate=500, actor=Actor("ops"))
    # When the sweep, a minute later, takes it for stalled and resumes it
    later = datetime.now(UTC) + timedelta(minutes=1)
    sweep_once(sessions, dispatcher, SweepSettings(grace_seconds=30), now=lambda: later)
    delayed, resumed = dispatcher.chunks
    # And then both chunk messages run at once, each as a worker would (chunk after chunk)
    def run(args):
        more = True
        while more:
            more = bulk.run_chunk(sessions, dispatcher, *args, chunk_seconds=0.2)
    threads = [threading.Thread(target=run, args=(args,)) for args in (delayed, resumed)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    # Then one chain did the work: every row requeued and published once, nothing counted as skipped
    with sessions.begin() as s:
        done = store.get_job(s, job.id)
    assert (done.status, done.matched, done.requeued, done.skipped) == ("done", 300, 300, 0)
    assert sorted(dispatcher.deliveries) == sorted(set(dispatcher.deliveries)) and len(dispatcher.deliveries) == 300
