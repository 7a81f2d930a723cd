"""A publish-only Celery app for processes that enqueue or requeue but run no tasks (API, CLI)."""

from __future__ import annotations

from celery import Celery

from certctl_notify.broker import transport_for


def make_producer(broker_url: str) -> Celery:
    """A Celery app that only publishes by task name; building it opens no connection."""
    app = Celery("certctl_notify_producer", broker=broker_url, set_as_current=False)
    app.conf.update(
        broker_transport=transport_for(broker_url),
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        # A broker outage must not hang an API request: fail fast, the sweep re-dispatches.
        task_publish_retry_policy={"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5},
        broker_connection_timeout=2,
    )
    return app
