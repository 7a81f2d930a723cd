"""kombu's Redis transport, with channels that treat a connection kombu already dropped as a lost connection.

When Redis goes away under a worker, Celery's consumer closes its connection to reconnect, and kombu
drops that transport's client (``Transport.client = None``). Anything that later touches a channel of
the old connection — its close giving unacknowledged messages back, or the late acknowledgement of a
send that finished meanwhile — builds a connection pool from that missing client and raises
AttributeError. Celery expects a connection error there; an AttributeError stops the worker
("Unrecoverable error", exit code 1), so a worker meant to reconnect stayed down (bench/chaos.py saw it
in about one run in three of fifteen quick Redis restarts). Here the missing client is reported as the
lost connection it is (``redis.ConnectionError``): Celery logs the failed acknowledgement and goes on,
and the message comes back after the visibility timeout (its claim then finds the attempt done).

This overrides kombu's private ``Channel._connparams``: `tests/workers/test_redis_transport.py` pins
the kombu behaviour it relies on and fails when kombu changes it.
"""

from __future__ import annotations

import redis
from kombu.transport import redis as kombu_redis

#: Celery's ``broker_transport`` for a redis:// or rediss:// broker in the worker.
TRANSPORT = "workers.redis_transport:Transport"
#: The same for a sentinel:// broker (kombu's Sentinel transport, its channels asking the sentinels).
SENTINEL_TRANSPORT = "workers.redis_transport:SentinelTransport"


class _DroppedClientIsLostConnection:
    def _connparams(self, asynchronous=False):
        if self.connection is not None and self.connection.client is None:
            raise redis.ConnectionError("the broker connection of this channel was closed")
        return super()._connparams(asynchronous=asynchronous)


class Channel(_DroppedClientIsLostConnection, kombu_redis.Channel):
    pass


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(_DroppedClientIsLostConnection, kombu_redis.SentinelChannel):
    pass


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
