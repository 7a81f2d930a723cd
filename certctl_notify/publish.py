"""Publishing: the task names and queues, the producer app, and the dispatcher that publishes
delivery tasks. The one place the core talks to the broker.

The core never imports the worker package; it publishes by task name, as any producer can.
"""

from __future__ import annotations

import logging
from typing import Protocol

from celery import Celery

log = logging.getLogger(__name__)


#: Name of the delivery task registered by `workers.tasks`.
DELIVER_TASK = "certctl_notify.deliver"
#: Name of the intake task any service may call with ``send_task``.
ENQUEUE_TASK = "certctl_notify.enqueue"
#: Name of the periodic sweep task.
SWEEP_TASK = "certctl_notify.sweep"
#: Name of the task that works through a bulk requeue job in rate-limited chunks.
BULK_REQUEUE_TASK = "certctl_notify.bulk_requeue"
#: Queue the delivery tasks travel on (prefetch 1, late acks).
DELIVERY_QUEUE = "certctl.deliver"


class Dispatcher(Protocol):
    def dispatch(self, notification_id: str, attempt: int) -> None:
        """Publish the delivery task for ``attempt`` of a row; raise when the broker refused it."""

    def run_requeue_job(self, job_id: str, generation: int) -> None:
        """Publish the next chunk of a bulk requeue job, for the chain of that ``generation``."""


class CeleryDispatcher:
    """Publishes ``certctl_notify.deliver`` through a Celery app (any app with the broker URL)."""

    def __init__(self, celery_app):
        self._app = celery_app
        # On Redis a queue is a list that the push creates: declaring it before every publish costs
        # a bind, two copies and a hash per message for nothing. An AMQP broker would drop a message
        # to a queue nobody declared yet, so there Celery declares as usual.
        self._options = {"declare": []} if is_redis(str(celery_app.conf.broker_url or "")) else {}

    def dispatch(self, notification_id: str, attempt: int) -> None:
        # retries=attempt-1 keeps Celery's own retry counter equal to ours, so the task's
        # max_retries and what Flower shows agree with the row. argsrepr is what Celery's saferepr
        # would write for these two plain values, without its cost.
        args = [notification_id, attempt]
        self._app.send_task(
            DELIVER_TASK, args=args, retries=attempt - 1, queue=DELIVERY_QUEUE,
            argsrepr=repr(args), kwargsrepr="{}", **self._options,
        )

    def run_requeue_job(self, job_id: str, generation: int) -> None:
        self._app.send_task(BULK_REQUEUE_TASK, args=[job_id, generation])


def dispatch_quietly(dispatcher: Dispatcher, notification_id: str, attempt: int) -> bool:
    """Publish, and on a broker error log it and return False: the row is already committed as
    pending, so the sweep delivers it later. Nothing is lost, only delayed."""
    try:
        dispatcher.dispatch(notification_id, attempt)
    except Exception as exc:  # classified: any publish failure means "the sweep will do it"
        log.warning(
            "publish of %s attempt %d failed (%s: %s); the sweep will re-dispatch it",
            notification_id, attempt, type(exc).__name__, exc,
        )
        return False
    return True


def is_redis(broker_url: str) -> bool:
    return broker_url.startswith(("redis://", "rediss://", "redis+socket://"))


def make_producer(broker_url: str) -> Celery:
    """A Celery app that only publishes by task name; building it opens no connection."""
    app = Celery("certctl_notify_producer", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # A broker outage must not hang an API request: fail fast, the sweep re-dispatches.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        broker_connection_timeout=2,
    )
    return app
