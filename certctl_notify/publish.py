"""Publishing: the task names and queues, the producer app, and the dispatcher that publishes
delivery tasks. The one place the core talks to the broker.

The core never imports the worker package; it publishes by task name, as any producer can.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

import redis
from celery import Celery
from kombu import Exchange, Queue
from redis.sentinel import Sentinel

from certctl_notify.broker_urls import is_amqp, is_redis, is_redis_tcp, is_sentinel

log = logging.getLogger(__name__)


#: Name of the delivery task registered by `workers.tasks`.
DELIVER_TASK = "certctl_notify.deliver"
#: Name of the intake task any service may call with ``send_task``.
ENQUEUE_TASK = "certctl_notify.enqueue"
#: Name of the periodic sweep task.
SWEEP_TASK = "certctl_notify.sweep"
#: Name of the periodic task that publishes the due retries waiting in PostgreSQL.
RELEASE_TASK = "certctl_notify.release_retries"
#: folds the status counts' deltas into their base (store/counts.py); beat runs it every few seconds
FOLD_COUNTS_TASK = "certctl_notify.fold_counts"
#: Name of the task that works through a bulk requeue job in rate-limited chunks.
BULK_REQUEUE_TASK = "certctl_notify.bulk_requeue"
#: Name of the periodic task that deletes notifications past their retention (certctl_notify/retention.py).
PURGE_TASK = "certctl_notify.purge"
#: Queue the delivery tasks travel on (prefetch 1, late acks).
DELIVERY_QUEUE = "certctl.deliver"
#: Queue alerts arrive on: Celery's default queue, where a bare ``send_task`` publishes. On Redis the
#: worker's intake relay (`workers.intake_relay`) consumes it, not Celery's consumer.
INTAKE_QUEUE = "celery"
#: Queue of our own housekeeping tasks (sweep, release of due retries, bulk requeue chunks).
CONTROL_QUEUE = "certctl.control"
#: Every queue a worker consumes, in the order their depths are reported.
QUEUES = (INTAKE_QUEUE, DELIVERY_QUEUE, CONTROL_QUEUE)
#: The exchange our queues are bound to on RabbitMQ, each by its own name.
AMQP_EXCHANGE = "certctl"
#: RabbitMQ's replicated queue type: durable, and a message the broker confirmed survives a node's loss.
QUORUM_QUEUE_ARGUMENTS = {"x-queue-type": "quorum"}
#: Message header carrying the row's ``dispatched_at`` as written with the publish: the sweep reads
#: it off the oldest queued delivery to tell rows whose messages wait in a backlog from lost ones.
DISPATCHED_AT_HEADER = "certctl-dispatched-at"
#: Connect and read timeout of the sweep's look at the delivery queue, in seconds.
PEEK_TIMEOUT_SECONDS = 2.0
#: Messages `CeleryDispatcher.dispatch_many` hands to the broker in one round trip at most (Redis).
PUBLISH_BATCH = 1000


class Dispatcher(Protocol):
    def dispatch(self, notification_id: str, attempt: int, dispatched_at: datetime | None = None) -> None:
        """Publish the delivery task for ``attempt`` of a row, stamped with the ``dispatched_at`` the row
        was given for this publish; raise when the broker refused it."""

    def dispatch_many(self, notification_ids: Sequence[str], attempt: int,
                      dispatched_at: datetime | None = None) -> None:
        """`dispatch` for several rows at once; raise when the broker refused them (some may have
        been published all the same)."""

    def oldest_queued_dispatch(self) -> datetime | None:
        """The stamp of the oldest delivery message still waiting in the queue; None when the queue is
        empty, its oldest message has no stamp, or the broker cannot be looked at this cheaply."""

    def run_requeue_job(self, job_id: str, generation: int) -> None:
        """Publish the next chunk of a bulk requeue job, for the chain of that ``generation``."""


class CeleryDispatcher:
    """Publishes ``certctl_notify.deliver`` through a Celery app (any app with the broker URL)."""

    def __init__(self, celery_app):
        self._app = celery_app
        # On Redis a queue is a list that the push creates: declaring it before every publish costs
        # a bind, two copies and a hash per message for nothing. An AMQP broker would drop a message
        # to a queue nobody declared yet, so there Celery declares as usual.
        broker_url = str(celery_app.conf.broker_url or "")
        self._options = {"declare": []} if is_redis(broker_url) else {}
        master = (celery_app.conf.broker_transport_options or {}).get("master_name")
        self._peek = (redis_client(broker_url, timeout=PEEK_TIMEOUT_SECONDS, sentinel_master=master)
                      if is_redis_tcp(broker_url) else None)

    def dispatch(self, notification_id: str, attempt: int, dispatched_at: datetime | None = None) -> None:
        self._send(notification_id, attempt, dispatched_at)

    def dispatch_many(self, notification_ids: Sequence[str], attempt: int,
                      dispatched_at: datetime | None = None) -> None:
        # The same messages as `dispatch`, through one producer (one pooled connection) for them all,
        # and on Redis one pipelined round trip per PUBLISH_BATCH messages (kombu's public
        # Producer.batch, kombu 5.7 on; older kombu publishes each at once). Published one by one
        # (a connection checkout, a Redis client and a round trip each), the messages took 94 % of an
        # unthrottled bulk requeue's time: 2,300 rows/s, 7,700 batched (tests/core/test_bulk_unthrottled.py
        # prints both publishing rates).
        with self._app.producer_or_acquire() as producer, _batched(producer):
            for notification_id in notification_ids:
                self._send(notification_id, attempt, dispatched_at, producer=producer)

    def _send(self, notification_id: str, attempt: int, dispatched_at: datetime | None, producer=None) -> None:
        # retries=attempt-1 keeps Celery's own retry counter equal to ours, so the task's
        # max_retries and what Flower shows agree with the row. argsrepr is what Celery's saferepr
        # would write for these two plain values, without its cost.
        args = [notification_id, attempt]
        headers = {DISPATCHED_AT_HEADER: dispatched_at.isoformat()} if dispatched_at is not None else None
        self._app.send_task(
            DELIVER_TASK, args=args, retries=attempt - 1, queue=DELIVERY_QUEUE,
            argsrepr=repr(args), kwargsrepr="{}", headers=headers, producer=producer, **self._options,
        )

    def oldest_queued_dispatch(self) -> datetime | None:
        # On Redis a queue is a list that consumers pop from its right end: the oldest message is
        # there, one LINDEX away. Other brokers offer no such peek; there the sweep uses its grace alone.
        if self._peek is None:
            return None
        raw = self._peek.lindex(DELIVERY_QUEUE, -1)
        if raw is None:
            return None
        stamp = (json.loads(raw).get("headers") or {}).get(DISPATCHED_AT_HEADER)
        return datetime.fromisoformat(stamp) if stamp else None

    def run_requeue_job(self, job_id: str, generation: int) -> None:
        self._app.send_task(BULK_REQUEUE_TASK, args=[job_id, generation], queue=CONTROL_QUEUE)


def dispatch_quietly(dispatcher: Dispatcher, notification_id: str, attempt: int,
                     dispatched_at: datetime | None = None) -> bool:
    """Publish, and on a broker error log it and return False: the row is already committed as
    pending, so the sweep delivers it later. Nothing is lost, only delayed."""
    try:
        dispatcher.dispatch(notification_id, attempt, dispatched_at)
    except Exception as exc:  # classified: any publish failure means "the sweep will do it"
        log.warning("publish of %s attempt %d failed (%s); the sweep will re-dispatch it",
                    notification_id, attempt, describe(exc))
        return False
    return True


def dispatch_many_quietly(dispatcher: Dispatcher, notification_ids: Sequence[str], attempt: int,
                          dispatched_at: datetime | None = None) -> bool:
    """`dispatch_quietly` for several committed rows: on a broker error log it and return False; the
    sweep re-dispatches those whose message did not get through (a duplicate is harmless: the claim
    lets one execution make each attempt)."""
    if not notification_ids:
        return True
    try:
        dispatcher.dispatch_many(notification_ids, attempt, dispatched_at)
    except Exception as exc:  # classified: any publish failure means "the sweep will do it"
        log.warning("publish of %d rows (attempt %d) failed (%s); the sweep will re-dispatch them",
                    len(notification_ids), attempt, describe(exc))
        return False
    return True


def amqp_queue_lengths(conn) -> dict[str, int]:
    """Messages ready in each of our queues on RabbitMQ (a passive declare each; a queue not declared
    yet counts 0). Messages a worker holds unacknowledged are not counted, as on Redis."""
    return for_each_amqp_queue(conn, lambda channel, queue: channel.queue_declare(queue, passive=True).message_count,
                               missing=0)


def for_each_amqp_queue(conn, action, *, missing=None) -> dict:
    """``action(channel, queue)`` for each of our queues on RabbitMQ, each on a channel of its own (the
    broker closes the channel a missing queue was asked on); a missing queue gives ``missing``."""
    results = {}
    for queue in QUEUES:
        channel = conn.channel()
        try:
            results[queue] = action(channel, queue)
        except conn.channel_errors:
            results[queue] = missing
        finally:
            with contextlib.suppress(*conn.connection_errors, *conn.channel_errors):
                channel.close()
    return results


def describe(exc: BaseException) -> str:
    """``Type: message`` of a publish error and of what caused it: kombu wraps a refusal by RabbitMQ
    (py-amqp's MessageNacked, a publisher confirm's nack) in an OperationalError, neither with any text."""
    parts: list[str] = []
    while exc is not None and len(parts) < 4:
        text = str(exc).strip()
        parts.append(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return ", caused by ".join(parts)


def _batched(producer):
    """kombu's publish batch on this producer where kombu has it (5.7 on), else nothing."""
    batch = getattr(producer, "batch", None)
    return batch(PUBLISH_BATCH) if batch is not None else contextlib.nullcontext()


def redis_client(broker_url: str, *, timeout: float, sentinel_master: str | None = None) -> redis.Redis:
    """A redis-py client of the broker's Redis; behind Sentinel, of whichever server is master now (it
    asks the sentinels again after a failover)."""
    if not is_sentinel(broker_url):
        return redis.Redis.from_url(broker_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    if not sentinel_master:
        raise ValueError("a sentinel:// broker needs the name of its master (CERTCTL_BROKER_SENTINEL_MASTER)")
    parts = [urlsplit(part) for part in broker_url.split(";")]
    db = int((parts[-1].path or "/0").lstrip("/") or 0)
    password = next((part.password for part in parts if part.password), None)
    sentinel = Sentinel([(part.hostname, part.port or 26379) for part in parts],
                        socket_timeout=timeout, socket_connect_timeout=timeout)
    return sentinel.master_for(sentinel_master, db=db, password=password, socket_timeout=timeout,
                               socket_connect_timeout=timeout)


def task_queues(broker_url: str) -> tuple[Queue, ...]:
    """Our queues, declared alike by every app that publishes or consumes.

    On RabbitMQ: durable quorum queues (the broker refuses to declare an existing queue with other
    arguments), each bound by its name to a topic exchange, the kind Celery's native delayed delivery
    for quorum queues needs (a countdown published to a direct exchange would sit in a worker until
    due). No retry of ours is a countdown there (each waits in PostgreSQL), but nothing may block a worker.
    """
    if not is_amqp(broker_url):
        return tuple(Queue(name) for name in QUEUES)
    exchange = Exchange(AMQP_EXCHANGE, type="topic", durable=True)
    return tuple(Queue(name, exchange, routing_key=name, queue_arguments=dict(QUORUM_QUEUE_ARGUMENTS), durable=True)
                 for name in QUEUES)


def publish_transport_options(broker_url: str, sentinel_master: str | None = None) -> dict:
    """kombu transport options every publisher needs: on RabbitMQ publisher confirms, so a publish
    returns only once the broker has taken the message, and one it refused raises; behind Redis
    Sentinel the name of the master the sentinels watch."""
    if is_amqp(broker_url):
        return {"confirm_publish": True}
    if is_sentinel(broker_url):
        if not sentinel_master:
            raise ValueError("a sentinel:// broker needs the name of its master (CERTCTL_BROKER_SENTINEL_MASTER)")
        return {"master_name": sentinel_master}
    return {}


def make_producer(broker_url: str, *, sentinel_master: str | None = None) -> Celery:
    """A Celery app that only publishes by task name; building it opens no connection."""
    app = Celery("certctl_notify_producer", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_queues=task_queues(broker_url),
        broker_transport_options=publish_transport_options(broker_url, sentinel_master),
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # A broker outage must not hang an API request: fail fast, the sweep re-dispatches.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        broker_connection_timeout=2,
    )
    return app
