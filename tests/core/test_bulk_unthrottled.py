"""Bulk requeue with CERTCTL_REQUEUE_RATE=0 (no limit) on real PostgreSQL and Redis: a real worker runs
the job, every row is requeued and published exactly once, cancel still stops it part way, a set rate
still holds, and a batch is published as the very messages one-by-one publishing sends."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis
from sqlalchemy import text

from certctl_notify import bulk, store
from certctl_notify.audit import Actor
from certctl_notify.environment import load_settings
from certctl_notify.errors import ConfigError
from certctl_notify.publish import DELIVERY_QUEUE, CeleryDispatcher, make_producer
from certctl_notify.store.listing import NotificationFilter
from tests.conftest import wait_for

DEAD = NotificationFilter(statuses=("dead",))
OPS = Actor("ops")


def add_dead(sessions, count: int) -> list[str]:
    """``count`` dead rows, last changed an hour ago, ids in order."""
    with sessions.begin() as s:
        return list(s.execute(text("""
            INSERT INTO notification_events (id, type, channel, recipient, message, status, retry_count,
                                             last_error, created_at, updated_at)
            SELECT 'notif_' || lpad(g::text, 6, '0'), 'RenewalFailure', 'Webhook', '', 'renewal failed', 'dead', 5,
                   'HTTP 503', now() - interval '2 hours', now() - interval '1 hour'
            FROM generate_series(1, :n) g
            RETURNING id"""), {"n": count}).scalars())


def queued(broker_url: str) -> list[dict]:
    """The delivery messages waiting in Redis, oldest first."""
    client = redis.Redis.from_url(broker_url)
    try:
        return [json.loads(raw) for raw in reversed(client.lrange(DELIVERY_QUEUE, 0, -1))]
    finally:
        client.close()


def task_args(message: dict) -> list:
    return json.loads(base64.b64decode(message["body"]))[0]


def by_status(sessions) -> dict[str, int]:
    with sessions.begin() as s:
        return store.count_by_status(s)


def job_row(sessions, job_id: str):
    with sessions.begin() as s:
        return store.get_job(s, job_id)


def test_an_unthrottled_job_on_a_real_worker_requeues_every_row_once(sessions, make_env, start_worker, producer,
                                                                    broker_url):
    # Given 5,000 dead rows, and a worker that runs housekeeping only (the deliveries stay in Redis to be read)
    dead = add_dead(sessions, 5000)
    start_worker(make_env(CERTCTL_REQUEUE_RATE="0"), queues="certctl.control")
    # When a bulk requeue without a rate limit is started
    job = bulk.start(sessions, CeleryDispatcher(producer), DEAD, rate=0, actor=OPS)
    done = wait_for(lambda: (row := job_row(sessions, job.id)).status == "done" and row, timeout=60,
                    message="the bulk job to finish")
    # Then every row was requeued once, and its delivery published once
    assert (done.matched, done.requeued, done.skipped, done.rate_per_second) == (5000, 5000, 0, 0)
    assert by_status(sessions) == {"pending": 5000, "sent": 0, "failed": 0, "dead": 0, "read": 0}
    messages = queued(broker_url)
    published = [task_args(m)[0] for m in messages]
    assert len(published) == 5000 and sorted(published) == dead
    assert {tuple(task_args(m)[1:]) for m in messages} == {(1,)}
    seconds = (done.finished_at - done.created_at).total_seconds()
    print(f"\nunthrottled bulk requeue on a worker: 5,000 rows in {seconds:.2f} s = {5000 / seconds:,.0f} rows/s")


def test_cancel_stops_an_unthrottled_job_between_batches(sessions, producer, broker_url):
    # Given an unthrottled job over 5,000 dead rows whose operator cancels it while its first batch publishes
    add_dead(sessions, 5000)
    publisher = CeleryDispatcher(producer)
    job = bulk.start(sessions, publisher, DEAD, rate=0, actor=OPS)

    class CancelledDuringFirstBatch:
        def dispatch_many(self, notification_ids, attempt, dispatched_at=None):
            publisher.dispatch_many(notification_ids, attempt, dispatched_at)
            with sessions.begin() as s:
                store.cancel_job(s, job.id, now=datetime.now(UTC))

        def run_requeue_job(self, *args):
            raise AssertionError("a cancelled job publishes no next chunk")

    # When its chunk runs, Then it stops after that batch: its rows requeued, the rest left dead
    assert bulk.run_chunk(sessions, CancelledDuringFirstBatch(), job.id, chunk_seconds=30) is False
    row = job_row(sessions, job.id)
    assert (row.status, row.requeued) == ("cancelled", bulk.UNTHROTTLED_BATCH)
    assert by_status(sessions)["pending"] == bulk.UNTHROTTLED_BATCH and by_status(sessions)["dead"] == 4000
    assert len(queued(broker_url)) == bulk.UNTHROTTLED_BATCH


def test_unthrottled_skips_rows_changed_after_it_began_and_records_progress(sessions, producer):
    # Given an unthrottled job, and two of its rows changed after it began (one requeued, one marked read)
    dead = add_dead(sessions, 2500)
    dispatcher = CeleryDispatcher(producer)
    job = bulk.start(sessions, dispatcher, DEAD, rate=0, actor=OPS)
    later = datetime.now(UTC) + timedelta(seconds=1)
    with sessions.begin() as s:
        assert store.requeue(s, dead[10], now=later) is not None
        assert store.mark_read(s, dead[2000], now=later) is not None
    # When it runs chunk after chunk of 1 ms (so at most a batch each), Then each records its progress
    progress = []
    while bulk.run_chunk(sessions, dispatcher, job.id, chunk_seconds=0.001):
        progress.append(job_row(sessions, job.id).requeued + job_row(sessions, job.id).skipped)
    assert progress == [1000, 2000, 2498]  # the two changed rows are not chosen at all
    done = job_row(sessions, job.id)  # and finishing counts them as skipped
    assert (done.status, done.matched, done.requeued, done.skipped) == ("done", 2500, 2498, 2)
    assert by_status(sessions)["read"] == 1 and by_status(sessions)["pending"] == 2499


def test_a_set_rate_still_holds(sessions, producer):
    add_dead(sessions, 800)
    dispatcher = CeleryDispatcher(producer)
    timings = {}
    for rate in (400, 0):
        job = bulk.start(sessions, dispatcher, DEAD, rate=rate, actor=OPS)
        started = time.monotonic()
        while bulk.run_chunk(sessions, dispatcher, job.id, chunk_seconds=30):
            pass
        timings[rate] = time.monotonic() - started
        assert job_row(sessions, job.id).requeued == 800
        with sessions.begin() as s:  # dead again, for the next round
            s.execute(text("UPDATE notification_events SET status = 'dead', updated_at = now() - interval '1 hour'"))
    print(f"\n800 rows: at 400/s {timings[400]:.2f} s, unthrottled {timings[0]:.2f} s")
    assert timings[400] >= 800 / 400 * 0.9


def test_a_batch_is_published_as_the_same_messages_as_one_by_one(producer, broker_url):
    # Given the same deliveries published one by one and as one batch
    dispatcher = CeleryDispatcher(producer)
    stamp = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    count = 2000
    started = time.perf_counter()
    for n in range(count):
        dispatcher.dispatch(f"notif_{n:06d}", 3, stamp)
    one_by_one = time.perf_counter() - started
    started = time.perf_counter()
    dispatcher.dispatch_many([f"notif_{n:06d}" for n in range(count)], 3, stamp)
    batched = time.perf_counter() - started
    messages = queued(broker_url)
    assert len(messages) == 2 * count
    # Then each pair differs only in the ids Celery gives every message (task id, delivery tag)

    def shape(message: dict) -> dict:
        headers = {k: v for k, v in message["headers"].items() if k not in ("id", "root_id")}
        properties = {k: v for k, v in message["properties"].items() if k not in ("correlation_id", "delivery_tag")}
        return {**message, "headers": headers, "properties": properties}

    for single, in_batch in zip(messages[:count], messages[count:], strict=True):
        assert shape(single) == shape(in_batch)
    assert shape(messages[0])["headers"]["certctl-dispatched-at"] == stamp.isoformat()
    assert task_args(messages[0]) == ["notif_000000", 3] and messages[0]["headers"]["retries"] == 2
    print(f"\npublishing {count:,} deliveries: one by one {count / one_by_one:,.0f}/s, "
          f"as a batch {count / batched:,.0f}/s")


def test_a_broker_that_refuses_a_batch_leaves_its_rows_pending_for_the_sweep(sessions, caplog):
    # Given an unthrottled job whose broker cannot be reached
    add_dead(sessions, 1500)
    unreachable = CeleryDispatcher(make_producer("redis://127.0.0.1:1/0"))
    job = bulk.start(sessions, unreachable, DEAD, rate=0, actor=OPS)
    # When it runs, Then it does not fail: the rows are requeued (pending, for the sweep) and it says why
    while bulk.run_chunk(sessions, unreachable, job.id, chunk_seconds=30):
        pass
    assert job_row(sessions, job.id).requeued == 1500 and by_status(sessions)["pending"] == 1500
    assert "the sweep will re-dispatch them" in caplog.text


def test_requeue_rate_zero_is_no_limit_and_a_negative_rate_is_refused():
    assert load_settings({}).api.requeue_rate == 100
    assert load_settings({"CERTCTL_REQUEUE_RATE": "0"}).api.requeue_rate == 0
    with pytest.raises(ConfigError, match="CERTCTL_REQUEUE_RATE"):
        load_settings({"CERTCTL_REQUEUE_RATE": "-1"})
