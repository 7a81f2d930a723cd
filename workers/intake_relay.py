"""The worker's intake relay: on Redis it consumes the intake queue instead of Celery's consumer.

One thread moves each message into the relay's in-progress list (`workers.intake_queue`), stores the
alert (`certctl_notify.intake.enqueue_alert`, ids derived from the message id) and only then removes the
message; a second thread stamps the relay alive and takes back the in-progress messages of relays that
died. A message that is not an alert (a delivery or housekeeping task an older version put on the
default queue) is forwarded to the queue it belongs on. The worker step `IntakeStep` runs the relay
when this worker consumes the intake queue on Redis, and removes that queue from Celery's consumer.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid

import redis
from celery import bootsteps

from certctl_notify.broker_urls import is_redis_tcp
from certctl_notify.db import UNAVAILABLE, make_sessions
from certctl_notify.errors import ValidationError
from certctl_notify.intake import enqueue_alert
from certctl_notify.publish import (
    CONTROL_QUEUE,
    DELIVER_TASK,
    DELIVERY_QUEUE,
    ENQUEUE_TASK,
    INTAKE_QUEUE,
    CeleryDispatcher,
    make_producer,
    redis_client,
)
from workers.intake_queue import IntakeMessage, IntakeQueue, MalformedMessage, decode

log = logging.getLogger("certctl_notify.intake")

#: Longest a fetch waits on an empty queue before looking at the stop flag again, in seconds.
FETCH_WAIT_SECONDS = 1.0
#: Longest wait between two tries while PostgreSQL or Redis cannot be reached, in seconds.
RETRY_CAP_SECONDS = 60.0
#: Where a message that cannot be stored for another reason than bad input is kept for an operator.
UNHANDLED_QUEUE = "certctl.intake.unhandled"
#: Socket timeout of the relay's Redis connections: longer than a fetch's wait.
REDIS_TIMEOUT_SECONDS = FETCH_WAIT_SECONDS + 5


class IntakeRelay:
    """Consumes the intake queue reliably for one worker; `start` and `stop` it with the worker."""

    def __init__(self, client: redis.Redis, sessions, dispatcher, *, consumer_timeout: float, threads: int = 1,
                 queue: str = INTAKE_QUEUE, relay_id: str | None = None):
        self.relay_id = relay_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.queue = IntakeQueue(client, queue, self.relay_id)
        self.sessions = sessions
        self.dispatcher = dispatcher
        self.consumer_timeout = consumer_timeout
        self.keep_interval = max(consumer_timeout / 6, 0.1)
        self.threads = threads
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        # Fetch threads share one in-progress list: each removes only the message it handled.
        loops = [(f"certctl-intake-{n}", self._fetch_loop) for n in range(self.threads)]
        for name, target in [*loops, ("certctl-intake-keeper", self._keep_loop)]:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("intake relay %s consumes %s", self.relay_id, self.queue.queue)

    def stop(self, timeout: float = 10) -> None:
        """Stop fetching, let the message in hand finish (or give it back), forget this relay."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)
        try:
            given = self.queue.give_back()
        except redis.RedisError as exc:  # classified: the keeper of another relay takes them back later
            log.warning("intake relay %s could not give its messages back (%s); another relay takes them "
                        "back after %gs", self.relay_id, exc, self.consumer_timeout)
            return
        if given:
            log.info("intake relay %s gave %d message(s) back to %s", self.relay_id, given, self.queue.queue)

    # --- the two threads --------------------------------------------------------------------------

    def _fetch_loop(self) -> None:
        # Stamped alive before the first fetch: an in-progress list nobody knows of would never be taken back.
        self._until_done("stamp the relay alive", self.queue.beat)
        while not self._stopping.is_set():
            raw = self._until_done("fetch from the intake queue", lambda: self.queue.fetch(FETCH_WAIT_SECONDS))
            if raw is not None:
                self.handle(raw)

    def _keep_loop(self) -> None:
        while not self._stopping.wait(self.keep_interval):
            try:
                self.queue.beat()
                taken = self.queue.reclaim(self.consumer_timeout)
            except redis.RedisError as exc:  # classified: tried again next interval
                log.warning("intake relay %s could not reach Redis to stay alive (%s)", self.relay_id, exc)
                continue
            if taken:
                log.warning("took back %d alert message(s) from an intake relay silent for %gs",
                            taken, self.consumer_timeout)

    # --- one message ------------------------------------------------------------------------------

    def handle(self, raw: bytes) -> None:
        """Store, refuse, forward or set aside one fetched message, then take it off the in-progress list."""
        try:
            message = decode(raw)
        except MalformedMessage as exc:
            log.error("refused a message on %s that is not a Celery task message (%s); nothing was created",
                      self.queue.queue, exc)
            self._until_done("drop a refused message", lambda: self.queue.finish(raw))
            return
        if message.task != ENQUEUE_TASK:
            target = DELIVERY_QUEUE if message.task == DELIVER_TASK else CONTROL_QUEUE
            self._until_done(f"forward {message.task} to {target}", lambda: self.queue.forward(raw, target))
            return
        if self._store(message):
            self._until_done("finish an intake message", lambda: self.queue.finish(raw))
        elif not self._stopping.is_set():
            self._until_done("set an intake message aside", lambda: self.queue.forward(raw, UNHANDLED_QUEUE))

    def _store(self, message: IntakeMessage) -> bool:
        """Store the alert, waiting out a database that cannot be reached (the message stays in progress
        meanwhile). True when the message is done with (stored or refused as bad input)."""
        delay = 1.0
        while True:
            try:
                if message.args:
                    raise ValidationError(f"{ENQUEUE_TASK} takes keyword arguments only")
                enqueue_alert(self.sessions, self.dispatcher, message.kwargs, source=message.id)
                return True
            except ValidationError as exc:
                log.error("refused %s message %s: %s; nothing was created", ENQUEUE_TASK, message.id, exc)
                return True
            except UNAVAILABLE as exc:
                log.warning("cannot store alert message %s yet (%s: %s); it stays in progress, next try in %gs",
                            message.id, type(exc).__name__, first_line(exc), delay)
            except Exception:  # classified: unexpected; kept for an operator rather than lost or retried forever
                log.exception("could not store alert message %s; it is kept on Redis list %s for an operator",
                              message.id, UNHANDLED_QUEUE)
                return False
            if self._stopping.wait(delay):
                return False  # stopping: the message stays in progress and is given back
            delay = min(delay * 2, RETRY_CAP_SECONDS)

    def _until_done(self, what: str, step):
        """Run a Redis step until it succeeds or the relay stops (then None)."""
        delay = 0.5
        while True:
            try:
                return step()
            except redis.RedisError as exc:
                log.warning("intake relay %s cannot %s (%s); next try in %gs", self.relay_id, what, exc, delay)
            if self._stopping.wait(delay):
                return None
            delay = min(delay * 2, RETRY_CAP_SECONDS)


def first_line(exc: BaseException) -> str:
    """A driver error's first line (psycopg2's messages run over several lines)."""
    return (str(exc).strip().splitlines() or [""])[0]


class IntakeStep(bootsteps.StartStopStep):
    """Runs an `IntakeRelay` in a worker that consumes the intake queue on Redis, in place of Celery's
    consumer for that queue (which would pop messages before recording them). Also makes sure such a
    worker consumes the housekeeping queue, which travelled on the intake queue before."""

    requires = {"celery.worker.components:Pool"}

    def __init__(self, worker, **kwargs):
        super().__init__(worker, **kwargs)
        self.relay = None
        queues = worker.app.amqp.queues
        consumed = list(queues.consume_from)
        if INTAKE_QUEUE not in consumed:
            self.enabled = False
            return
        if CONTROL_QUEUE not in consumed:
            consumed.append(CONTROL_QUEUE)
        # redis+socket:// is kombu's own spelling, which the relay's redis-py client cannot open.
        self.enabled = is_redis_tcp(str(worker.app.conf.broker_url or ""))
        if self.enabled:
            consumed.remove(INTAKE_QUEUE)
        queues.select(consumed)

    def start(self, worker):
        runtime = worker.app.runtime
        broker_url = str(worker.app.conf.broker_url)
        master = runtime.settings.broker_sentinel_master
        client = redis_client(broker_url, timeout=REDIS_TIMEOUT_SECONDS, sentinel_master=master)
        # The relay's threads get a database engine and a publishing app of their own. The pool forks
        # a new process whenever one exits (CERTCTL_WORKER_MAX_TASKS_PER_CHILD, a time limit, a crash)
        # while these threads run; a lock one of them held at that instant (the worker app's event
        # dispatcher, its producer pool, an engine's caches) would stay held for ever in the child,
        # and the child's first retry would hang on it. Objects the threads never share cannot.
        self._sessions = make_sessions(runtime.settings.database_url)
        self._producer = make_producer(broker_url, sentinel_master=master)
        self.relay = IntakeRelay(client, self._sessions, CeleryDispatcher(self._producer),
                                 consumer_timeout=runtime.settings.worker.intake_consumer_timeout_seconds,
                                 threads=worker.concurrency)
        self.relay.start()

    def stop(self, worker):
        if self.relay is not None:
            self.relay.stop()
            self.relay = None
            self._producer.close()
            self._sessions.dispose()

    shutdown = stop
