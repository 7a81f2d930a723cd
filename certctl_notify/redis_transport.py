"""kombu's Redis transport, keeping one synchronous client per channel instead of one per command.

kombu builds a new ``redis.Redis`` for every synchronous command it sends (each publish, each ack,
each task event: ``Channel.conn_or_acquire``), and redis-py 6+ copies its ~200 response callbacks
into every new client: about 60 µs each time, several times per task, in the worker's main process,
the API and every producer. The client is only a facade over the channel's connection pool (which
hands each command its own connection, and is safe to share between threads), so one is enough.
Everything else, including the wire format and the keys, is kombu's own.
"""

from __future__ import annotations

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:  # kombu caches the event loop's client itself (Channel.client)
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        # A new pool (after a fork, or after kombu dropped the old one) gets a new client.
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
