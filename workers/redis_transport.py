"""kombu's Redis transport, with a channel whose close survives a connection kombu already dropped.

When Redis goes away under a worker, Celery's consumer closes its connection to reconnect. kombu may
then close a channel whose transport has already lost its client (``Transport.client`` is None): the
channel's close gives its unacknowledged messages back (``restore_unacked_once``), which builds a new
connection pool from that missing client and raises AttributeError. Celery does not expect that error
there and stops the worker ("Unrecoverable error", exit code 1): a worker that was only meant to
reconnect stays down. Here that one error is logged instead; the messages stay in kombu's unacked hash
and come back after the visibility timeout, as a killed worker's do. Everything else is kombu's own.
`tests/workers/test_redis_transport.py` pins the kombu behaviour this relies on.
"""

from __future__ import annotations

import logging

from kombu.transport import redis as kombu_redis

log = logging.getLogger("certctl_notify.worker")

#: Celery's ``broker_transport`` for a redis:// or rediss:// broker in the worker.
TRANSPORT = "workers.redis_transport:Transport"


class Channel(kombu_redis.Channel):
    def close(self):
        try:
            super().close()
        except AttributeError:
            if self.connection is None or self.connection.client is not None:
                raise  # not the dropped connection: someone else's bug, not ours to hide
            log.warning("closed a Redis channel whose connection was already dropped; its unacknowledged "
                        "messages come back after the visibility timeout")


class Transport(kombu_redis.Transport):
    Channel = Channel
