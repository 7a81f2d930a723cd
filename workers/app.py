"""Entry point for ``celery -A workers.app``: builds the app from the environment, once."""

from __future__ import annotations

import sys

from celery import Celery

from certctl_notify.config import Settings, load_settings
from certctl_notify.errors import ConfigError
from workers import signals
from workers.config import celery_config, validate_celery
from workers.runtime import Runtime
from workers.tasks import register_tasks


def make_celery(settings: Settings) -> Celery:
    """The Celery app with our settings checked, tasks registered and signal handlers connected.

    Raises:
        ConfigError: when a setting delivery depends on is wrong.
    """
    app = Celery("certctl_notify", set_as_current=False)
    app.conf.update(celery_config(settings))
    validate_celery(app.conf, settings)
    runtime = Runtime(settings)
    register_tasks(app, runtime)
    signals.connect(runtime, settings)
    app.runtime = runtime
    return app


def _from_environment() -> Celery:
    try:
        return make_celery(load_settings())
    except ConfigError as exc:
        sys.exit(f"certctl-notify: refusing to start: {exc}")


app = _from_environment()
