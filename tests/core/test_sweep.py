"""The sweep against real PostgreSQL and a real Redis broker: what it re-publishes, in which order,
how much per tick, and that two sweeps never run at once."""

from __future__ import annotations

import base64
import json
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import redis

from certctl_notify import store
from certctl_notify.model import events
from certctl_notify.publish import DELIVERY_QUEUE, CeleryDispatcher, make_producer
from certctl_notify.settings import SweepSettings
from certctl_notify.sweep import sweep_once

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
SETTINGS = SweepSettings(interval_seconds=120, grace_seconds=120, batch_size=1000)


@pytest.fixture
def dispatcher(broker_url):
    app = make_producer(broker_url)
    yield CeleryDispatcher(app)
    app.close()


def published(broker_url) -> list[tuple[str, int]]:
    """(notification id, attempt) of every delivery message on the broker, in publish order."""
    raw = redis.Redis.from_url(broker_url).lrange(DELIVERY_QUEUE, 0, -1)
    messages = [json.loads(base64.b64decode(json.loads(m)["body"])) for m in reversed(raw)]
    return [(args[0], args[1]) for args, _kwargs, _embed in messages]


def add(sessions, status: str, *, age: timedelta, **values) -> str:
    at = NOW - age
    row = {"id": f"notif_{uuid.uuid4().hex[:10]}", "type": "RenewalFailure", "channel": "Webhook",
           "recipient": "", "message": "m", "status": status, "retry_count": 0, "created_at": at,
           "updated_at": at, "dispatched_at": at, **values}
    with sessions.begin() as s:
        store.insert_notification(s, row)
    return row["id"]


def test_sweep_republishes_lost_work_and_leaves_everything_else(sessions, dispatcher, broker_url):
    # Given rows in every situation
    overdue = add(sessions, "failed", age=timedelta(minutes=30), retry_count=2,
                  next_retry_at=NOW - timedelta(minutes=10))
    stale = add(sessions, "pending", age=timedelta(minutes=9))
    abandoned = add(sessions, "failed", age=timedelta(minutes=30), retry_count=1,
                    next_retry_at=NOW - timedelta(minutes=20), lease_owner="t:2",
                    lease_expires_at=datetime.now(UTC) - timedelta(minutes=1))  # leases: the database's clock
    add(sessions, "failed", age=timedelta(minutes=5), retry_count=1, next_retry_at=NOW + timedelta(minutes=1))
    add(sessions, "failed", age=timedelta(minutes=5), retry_count=1, next_retry_at=NOW - timedelta(seconds=30))
    add(sessions, "pending", age=timedelta(seconds=30))  # just published: the broker has it
    add(sessions, "pending", age=timedelta(minutes=10), lease_owner="t:1",
        lease_expires_at=datetime.now(UTC) + timedelta(minutes=1))  # being attempted right now
    for status in ("sent", "dead", "read"):
        add(sessions, status, age=timedelta(hours=1))
    # When the sweep runs
    report = sweep_once(sessions, dispatcher, SETTINGS, now=lambda: NOW)
    # Then exactly the lost work is published again, oldest due first, each for its next attempt
    assert published(broker_url) == [(abandoned, 2), (overdue, 3), (stale, 1)]
    assert report.redispatched == {"abandoned": 1, "overdue": 1, "stale_pending": 1}
    # And a second tick right after publishes nothing more (they were stamped as dispatched)
    assert sweep_once(sessions, dispatcher, SETTINGS, now=lambda: NOW + timedelta(seconds=5)).total == 0
    assert len(published(broker_url)) == 3


def test_sweep_takes_at_most_one_batch_per_tick_oldest_first(sessions, dispatcher, broker_url):
    ids = [add(sessions, "pending", age=timedelta(minutes=60 - i)) for i in range(25)]
    report = sweep_once(sessions, dispatcher, SweepSettings(120, 120, batch_size=10), now=lambda: NOW)
    assert report.total == 10
    assert [nid for nid, _ in published(broker_url)] == ids[:10]


def test_two_sweeps_at_once_never_both_run(sessions, dispatcher, broker_url, engine):
    # Given due rows, and another sweep holding the lock (a replica mid-tick)
    for _ in range(3):
        add(sessions, "pending", age=timedelta(minutes=10))
    holding, release = threading.Event(), threading.Event()

    def other_sweep():
        with sessions.begin() as s:
            assert store.try_sweep_lock(s)
            holding.set()
            release.wait(10)

    other = threading.Thread(target=other_sweep)
    other.start()
    holding.wait(10)
    # When this sweep runs meanwhile, Then it does nothing
    try:
        report = sweep_once(sessions, dispatcher, SETTINGS, now=lambda: NOW)
    finally:
        release.set()
        other.join()
    assert report.locked_out and published(broker_url) == []
    # And once the other sweep is done, the next tick does the work
    assert sweep_once(sessions, dispatcher, SETTINGS, now=lambda: NOW).total == 3


def test_a_broker_outage_during_the_sweep_loses_nothing(sessions, make_env):
    # Given a due row and a broker that is down
    nid = add(sessions, "pending", age=timedelta(minutes=10))
    down = CeleryDispatcher(make_producer("redis://127.0.0.1:1/0"))
    # When the sweep cannot publish
    report = sweep_once(sessions, down, SETTINGS, now=lambda: NOW)
    # Then it says so, and the row is still pending for a later tick
    assert report.publish_failures == 1 and report.total == 0
    with sessions.begin() as s:
        assert store.get(s, nid).status == "pending"


def queued_rows(sessions, dispatcher, prefix: str, count: int, **columns) -> list[dict]:
    """``count`` rows published 10 minutes ago (older than the grace), oldest first, each 1 ms apart,
    whose delivery messages all still wait in the queue: no worker has caught up with the backlog."""
    start = NOW - timedelta(minutes=10)
    rows = [{"id": f"{prefix}_{i:05d}", "type": "RenewalFailure", "channel": "Webhook", "recipient": "",
             "message": "m", "created_at": start, "updated_at": start,
             "dispatched_at": start + timedelta(milliseconds=i), **columns} for i in range(count)]
    with sessions.begin() as s:
        s.execute(events.insert(), rows)
    for row in rows:
        dispatcher.dispatch(row["id"], row["retry_count"] + 1, row["dispatched_at"])
    return rows


def test_a_backlog_of_queued_deliveries_is_left_alone_and_lost_ones_are_recovered(sessions, dispatcher, broker_url):
    # Given 5,000 pending rows dispatched 10 minutes ago (older than the grace), oldest first, whose
    # delivery messages all still wait in the queue: no worker has caught up with the backlog
    rows = queued_rows(sessions, dispatcher, "notif_backlog", 5000, status="pending", retry_count=0)
    queue = redis.Redis.from_url(broker_url)
    # When the sweep runs, Then it re-publishes none of them: they are queued, not lost
    report = sweep_once(sessions, dispatcher, SETTINGS, now=lambda: NOW)
    assert report.total == 0 and report.queued_since == rows[0]["dispatched_at"]
    assert queue.llen(DELIVERY_QUEUE) == 5000
    # When the oldest message is deleted from the queue by hand, Then the next tick recovers exactly it
    queue.rpop(DELIVERY_QUEUE)
    report = sweep_once(sessions, dispatcher, SETTINGS, now=lambda: NOW + timedelta(seconds=1))
    assert report.redispatched == {"stale_pending": 1}
    assert published(broker_url)[-1] == (rows[0]["id"], 1)
    # When one in the middle is lost too, and a worker then works through the backlog (every other
    # row delivered), Then the sweep after the backlog has cleared recovers the lost one, and only it
    queue.lrem(DELIVERY_QUEUE, 1, next(m for m in queue.lrange(DELIVERY_QUEUE, 0, -1) if b"notif_backlog_02500" in m))
    assert sweep_once(sessions, dispatcher, SETTINGS, now=lambda: NOW + timedelta(seconds=2)).total == 0
    queue.delete(DELIVERY_QUEUE)
    with sessions.begin() as s:
        s.execute(events.update().where(events.c.id != rows[2500]["id"]).values(status="sent"))
    report = sweep_once(sessions, dispatcher, SETTINGS, now=lambda: NOW + timedelta(seconds=3))
    assert report.redispatched == {"stale_pending": 1} and report.queued_since is None
    assert published(broker_url) == [(rows[2500]["id"], 1)]


def test_released_retries_waiting_in_a_backlog_are_left_alone_and_a_lost_one_is_recovered(
    sessions, dispatcher, broker_url
):
    # Given 500 failed rows whose retries were due and released 10 minutes ago (older than the grace),
    # their messages all still waiting in the delivery queue behind a backlog
    rows = queued_rows(sessions, dispatcher, "notif_retry", 500, status="failed", retry_count=1,
                       next_retry_at=NOW - timedelta(minutes=10))
    queue = redis.Redis.from_url(broker_url)
    # When the sweep runs, Then it re-publishes none of them: they wait, they are not lost
    report = sweep_once(sessions, dispatcher, SETTINGS, now=lambda: NOW)
    assert report.total == 0 and queue.llen(DELIVERY_QUEUE) == 500
    # When the oldest is deleted from the queue by hand, Then the next tick recovers exactly that retry
    queue.rpop(DELIVERY_QUEUE)
    report = sweep_once(sessions, dispatcher, SETTINGS, now=lambda: NOW + timedelta(seconds=1))
    assert report.redispatched == {"overdue": 1}
    assert published(broker_url)[-1] == (rows[0]["id"], 2)
