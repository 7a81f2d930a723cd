"""Our Redis transport is kombu's, minus a client object per command: same keys, same messages."""

from __future__ import annotations

import base64
import json

import redis
from kombu import Connection

from certctl_notify.config import load_settings
from certctl_notify.publish import (
    DELIVER_TASK,
    DELIVERY_QUEUE,
    REDIS_TRANSPORT,
    CeleryDispatcher,
    make_producer,
    transport_for,
)
from workers.config import celery_config


def test_redis_brokers_use_it_and_others_keep_their_own_transport():
    assert transport_for("redis://127.0.0.1:6379/0") == REDIS_TRANSPORT
    assert transport_for("rediss://redis.example:6380/0") == REDIS_TRANSPORT
    assert transport_for("sqla+sqlite:///var/broker.sqlite") is None
    assert transport_for("amqp://guest@127.0.0.1//") is None
    embedded = celery_config(load_settings({"CERTCTL_BROKER_URL": "sqla+sqlite:///tmp/b.sqlite"}))
    assert embedded["broker_transport"] is None


def test_a_published_delivery_is_the_message_stock_celery_reads(broker_url):
    # Given a producer publishing through our transport
    app = make_producer(broker_url)
    try:
        CeleryDispatcher(app).dispatch("notif_wire", 3)
    finally:
        app.close()
    # Then the queue's Redis list holds a standard Celery protocol-2 message for the deliver task
    raw = redis.Redis.from_url(broker_url).lrange(DELIVERY_QUEUE, 0, -1)
    assert len(raw) == 1
    message = json.loads(raw[0])
    assert message["headers"]["task"] == DELIVER_TASK
    assert message["headers"]["retries"] == 2
    assert message["headers"]["argsrepr"] == "['notif_wire', 3]"  # what Flower shows
    body = json.loads(base64.b64decode(message["body"]))
    assert body[0] == ["notif_wire", 3]


def test_one_client_serves_every_command_until_the_pool_is_replaced(broker_url):
    with Connection(broker_url, transport=REDIS_TRANSPORT) as conn:
        channel = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first
        first.ping()
        # kombu drops its pools after a fork; the next command must not use the parent's
        channel._disconnect_pools()
        second = channel._create_client()
        assert second is not first
        assert second.connection_pool is channel.pool
        assert second.ping()
