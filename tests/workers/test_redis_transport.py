"""The worker's Redis transport: a channel closed after kombu dropped its connection does not stop the
worker; and the kombu behaviour that makes the layer necessary (fails loudly when kombu changes)."""

from __future__ import annotations

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue
from kombu.transport import redis as kombu_redis

from certctl_notify.environment import load_settings
from workers import redis_transport
from workers.config import celery_config


def channel_holding_an_unacked_message(broker_url: str, transport) -> tuple[Connection, object]:
    """A channel that took one message without acknowledging it, whose transport then lost its client
    as kombu's Connection.close does to it (Celery's consumer closes its connection to reconnect)."""
    conn = Connection(broker_url, transport=transport)
    channel = conn.channel()
    queue = Queue("certctl.test.transport", Exchange("certctl.test.transport"), "k")
    queue(channel).declare()
    Producer(channel).publish({"n": 1}, exchange=queue.exchange, routing_key="k", serializer="json")
    assert channel.basic_get(queue.name, no_ack=False) is not None
    channel._disconnect_pools()
    conn.transport.client = None
    return conn, channel


def test_kombu_still_raises_attributeerror_closing_such_a_channel(broker_url):
    # The reason for workers.redis_transport: if this fails, kombu fixed it and the layer can go.
    _, channel = channel_holding_an_unacked_message(broker_url, kombu_redis.Transport)
    with pytest.raises(AttributeError, match="hostname"):
        channel.close()


def test_our_channel_closes_and_leaves_the_message_for_the_visibility_timeout(broker_url):
    _, channel = channel_holding_an_unacked_message(broker_url, redis_transport.Transport)
    channel.close()  # no AttributeError: the worker goes on reconnecting
    assert channel.closed
    assert redis.Redis.from_url(broker_url).hlen("unacked") == 1  # given back later, not lost


def test_the_worker_uses_it_on_redis_and_kombus_own_elsewhere():
    on_redis = celery_config(load_settings({"CERTCTL_BROKER_URL": "redis://127.0.0.1:6379/0"}))
    assert on_redis["broker_transport"] == redis_transport.TRANSPORT
    assert celery_config(load_settings({}))["broker_transport"] is None
    with Connection("redis://127.0.0.1:6379/0", transport=on_redis["broker_transport"]) as conn:
        assert isinstance(conn.transport, redis_transport.Transport)
