"""Retry waits longer than CERTCTL_RETRY_HOLD_MAX wait in PostgreSQL, not in a worker: beat releases
them when due, a worker holds nothing for an outage, and other channels keep flowing."""

from __future__ import annotations

import time

import pytest
import redis

from certctl_notify import intake, store
from certctl_notify.publish import CeleryDispatcher
from tests.conftest import wait_for
from tests.support.receiver import Receiver
from tests.support.rows import attempts_of, settled


@pytest.fixture
def enqueue(sessions, producer):
    dispatcher = CeleryDispatcher(producer)

    def enqueue(key: str, channel: str = "Webhook"):
        fields = {"type": "RenewalFailure", "channel": channel, "message": f"renewal of {key} failed",
                  "certificate_id": key}
        return intake.enqueue_alert(sessions, dispatcher, fields)[0].row

    return enqueue


def test_waits_kept_in_postgresql_are_released_on_schedule_and_sent_once(sessions, receiver, make_env, start_worker,
                                                                         enqueue):
    # Given waits of 0.3, 0.6 and 1.2 s that no worker holds (CERTCTL_RETRY_HOLD_MAX=0), released by
    # beat every 100 ms, and a receiver that fails three times
    env = make_env(CERTCTL_NOTIFICATION_RETRY_BASE="300ms", CERTCTL_NOTIFICATION_RETRY_CAP="2s",
                   CERTCTL_RETRY_HOLD_MAX="0", CERTCTL_RETRY_RELEASE_INTERVAL="100ms", CERTCTL_SWEEP_GRACE="5s")
    receiver.script("c-db-wait", [503, 503, 503, 200])
    start_worker(env, beat=True)
    # When an alert is enqueued
    row = enqueue("c-db-wait")
    # Then it is delivered on attempt 4, each wait the schedule's (never shorter), each attempt sent once
    done = wait_for(settled(sessions, row.id, "sent", "dead"), timeout=30, message="delivery")
    assert (done.status, done.retry_count) == ("sent", 3)
    history = attempts_of(sessions, row.id)
    assert [(a.attempt, a.outcome) for a in history] == [(1, "retry"), (2, "retry"), (3, "retry"), (4, "sent")]
    waits = [(b.started_at - a.finished_at).total_seconds() for a, b in zip(history, history[1:], strict=False)]
    for wait, expected in zip(waits, [0.3, 0.6, 1.2], strict=True):
        assert expected - 0.005 <= wait <= expected + 1.0, (waits, expected)
    assert len(receiver.for_key("c-db-wait")) == 4


def test_an_outage_storm_holds_no_retry_in_the_worker_and_other_channels_keep_flowing(
    sessions, receiver, make_env, start_worker, enqueue, broker_url
):
    # Given the webhook receiver down for every alert, production-like waits (30 s, then 60 s), and
    # Slack working (its own receiver)
    slack = Receiver().start()
    try:
        env = make_env(CERTCTL_NOTIFICATION_RETRY_BASE="30s", CERTCTL_NOTIFICATION_RETRY_CAP="60s",
                       CERTCTL_SLACK_WEBHOOK_URL=slack.url)
        keys = [f"c-storm-{i}" for i in range(1000)]
        for key in keys:
            receiver.script(key, [503])
        start_worker(env)
        # When 1,000 webhook alerts fail their first attempt
        for key in keys:
            enqueue(key)

        def all_failed():
            with sessions.begin() as s:
                return store.count_by_status(s)["failed"] == len(keys)

        wait_for(all_failed, timeout=120, interval=0.5, message="every first attempt to fail")
        # Then the worker holds none of their retries: nothing waits unacknowledged on the broker
        # (held countdowns would sit there, one per alert, for the whole wait)
        time.sleep(1)
        assert redis.Redis.from_url(broker_url).hlen("unacked") <= 2
        # And another channel's alert is delivered at once, not behind the outage
        started = time.monotonic()
        row = enqueue("c-storm-slack", channel="Slack")
        done = wait_for(settled(sessions, row.id, "sent", "dead"), timeout=10, message="the Slack alert")
        assert done.status == "sent" and time.monotonic() - started < 5
        assert len(slack.requests) == 1
    finally:
        slack.stop()
