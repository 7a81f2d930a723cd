"""The Celery app factory: `make_celery(settings)` checks the settings delivery depends on, registers
the tasks and routes this process's worker signals to the app's runtime."""

from __future__ import annotations

from celery import Celery

from certctl_notify.settings import Settings
from workers import signals
from workers.config import celery_config, validate_celery
from workers.intake_relay import IntakeStep
from workers.runtime import Runtime
from workers.tasks import register_tasks


def make_celery(settings: Settings) -> Celery:
    """The Celery app with our settings checked, tasks registered and signal handlers installed.

    Raises:
        ConfigError: when a setting delivery depends on is wrong.
    """
    app = Celery("certctl_notify", set_as_current=False)
    app.conf.update(celery_config(settings))
    validate_celery(app.conf, settings)
    runtime = Runtime(settings)
    register_tasks(app, runtime)
    # On Redis, the intake queue is consumed by a relay that moves messages instead of popping them.
    app.steps["worker"].add(IntakeStep)
    signals.install(runtime)
    app.runtime = runtime
    return app
