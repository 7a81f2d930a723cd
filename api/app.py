"""The Flask app factory: ``gunicorn 'api.app:create_app()'``."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from flask import Flask

from certctl_notify.config import Settings, load_settings
from certctl_notify.db import make_sessions
from certctl_notify.metrics import for_process, scrape_registry
from certctl_notify.publish import CeleryDispatcher, Dispatcher, make_producer

#: Largest request body accepted, in bytes (larger → 413).
MAX_BODY_BYTES = 1024 * 1024

log = logging.getLogger("certctl_notify.api")


@dataclass
class Deps:
    sessions: object
    producer: object
    dispatcher: Dispatcher
    metrics: object = None  #: this process's counters (`certctl_notify.metrics.Metrics`)
    scrape: object = None  #: the registry ``GET /metrics`` renders


def create_app(settings: Settings | None = None, *, dispatcher: Dispatcher | None = None) -> Flask:
    """Build the API; ``settings`` default to the environment (read once, here)."""
    from api import errors, health, notifications, requeue_jobs, stats

    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["CERTCTL"] = settings
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    producer = make_producer(settings.broker_url)
    sessions = make_sessions(settings.database_url)
    metrics = for_process(settings.metrics_dir, "api")
    app.extensions["certctl"] = Deps(
        sessions=sessions,
        producer=producer,
        dispatcher=dispatcher or CeleryDispatcher(producer),
        metrics=metrics,
        scrape=scrape_registry(sessions, settings.broker_url, metrics, settings.metrics_dir),
    )
    errors.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(notifications.bp)
    app.register_blueprint(requeue_jobs.bp)
    app.register_blueprint(stats.bp)
    from api import metrics as metrics_view
    app.register_blueprint(metrics_view.bp)
    from api import workers
    app.register_blueprint(workers.bp)
    from api import openapi
    app.register_blueprint(openapi.bp)
    if not settings.api.auth_enabled:
        log.warning("CERTCTL_AUTH_TYPE=none: the API accepts every request without a key (local use only)")
    elif not settings.api.keys:
        log.warning("no CERTCTL_API_KEYS configured: every /api/v1 request will be refused with 401")
    return app
