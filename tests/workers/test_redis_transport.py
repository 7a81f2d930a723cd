"""The worker's Redis transport: a channel used after kombu dropped its connection (closed, or a late
acknowledgement) fails as a lost connection, which Celery survives, not with the AttributeError that
stopped the worker; and the kombu behaviour that makes the layer necessary (fails loudly when kombu
changes it)."""

from __future__ import annotations

import logging

import pytest
import redis
from kombu import Connection, Exchange, Producer, Queue
from kombu.transport import redis as kombu_redis

from certctl_notify.environment import load_settings
from workers import redis_transport
from workers.config import celery_config


def channel_holding_an_unacked_message(broker_url: str, transport) -> tuple[Connection, object, object]:
    """A channel that took one message without acknowledging it, whose transport then lost its client
    as kombu's Connection.close does to it (Celery's consumer closes its connection to reconnect)."""
    conn = Connection(broker_url, transport=transport)
    channel = conn.channel()
    queue = Queue("certctl.test.transport", Exchange("certctl.test.transport"), "k")
    queue(channel).declare()
    Producer(channel).publish({"n": 1}, exchange=queue.exchange, routing_key="k", serializer="json")
    message = channel.basic_get(queue.name, no_ack=False)
    assert message is not None
    channel._disconnect_pools()
    conn.transport.client = None
    return conn, channel, message


def test_kombu_still_raises_attributeerror_using_such_a_channel(broker_url):
    # The reason for workers.redis_transport: if this fails, kombu fixed it and the layer can go.
    _, channel, message = channel_holding_an_unacked_message(broker_url, kombu_redis.Transport)
    with pytest.raises(AttributeError, match="hostname"):
        message.ack()
    with pytest.raises(AttributeError, match="hostname"):
        channel.close()


def test_our_channel_fails_as_a_lost_connection_and_leaves_the_message_for_the_visibility_timeout(broker_url):
    conn, channel, message = channel_holding_an_unacked_message(broker_url, redis_transport.Transport)
    # a late acknowledgement: what Celery's request does, logging instead of stopping the worker
    message.ack_log_error(logging.getLogger("test"), conn.connection_errors)
    assert not message.acknowledged
    # closing it (Celery's consumer reconnecting): kombu ignores connection errors there
    conn.maybe_close_channel(channel)
    assert channel.closed
    assert redis.Redis.from_url(broker_url).hlen("unacked") == 1  # given back later, not lost


def test_the_worker_uses_it_on_redis_and_kombus_own_elsewhere():
    on_redis = celery_config(load_settings({"CERTCTL_BROKER_URL": "redis://127.0.0.1:6379/0"}))
    assert on_redis["broker_transport"] == redis_transport.TRANSPORT
    assert celery_config(load_settings({}))["broker_transport"] is None
    with Connection("redis://127.0.0.1:6379/0", transport=on_redis["broker_transport"]) as conn:
        assert isinstance(conn.transport, redis_transport.Transport)
