"""What every view needs, built once by `api.app.create_app` and reached through `deps()`."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from flask import current_app, g
from prometheus_client import CollectorRegistry

from certctl_notify.audit import Actor
from certctl_notify.db import Transactions
from certctl_notify.metrics import Metrics
from certctl_notify.publish import Dispatcher
from certctl_notify.settings import Settings


@dataclass(frozen=True)
class Deps:
    settings: Settings
    sessions: Transactions  #: short transactions on the database
    producer: Celery  #: a publish-only Celery app on the broker (also asked by the Workers view)
    dispatcher: Dispatcher  #: publishes delivery tasks and bulk requeue chunks
    metrics: Metrics  #: this process's counters
    scrape: CollectorRegistry  #: what ``GET /metrics`` renders


def deps() -> Deps:
    """This app's dependencies (inside a request or an app context)."""
    return current_app.extensions["certctl"]


def actor() -> Actor:
    """Who makes this request, for the audit log: the API key's name and the request id."""
    return Actor(g.actor, g.get("request_id"))
