"""What a delivery publish puts on the broker: the stock Celery protocol-2 message any worker reads."""

from __future__ import annotations

import base64
import json

import pytest
import redis

from certctl_notify.broker_urls import is_redis_tcp
from certctl_notify.publish import (
    DELIVER_TASK,
    DELIVERY_QUEUE,
    CeleryDispatcher,
    make_producer,
)


def test_a_published_delivery_is_the_message_stock_celery_reads(broker_url):
    # Given a producer publishing a delivery
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


@pytest.mark.parametrize("url, redis_tcp", [("redis://h:6379/0", True), ("rediss://h:6380/0", True),
                                           ("redis+socket:///run/redis.sock", False), ("amqp://h//", False),
                                           ("sqla+sqlite:///var/broker.sqlite", False)])
def test_the_relay_and_the_queue_peek_only_take_urls_redis_py_opens(url, redis_tcp):
    # redis+socket:// is kombu's spelling: there the worker leaves the intake queue to Celery's consumer
    assert is_redis_tcp(url) is redis_tcp
