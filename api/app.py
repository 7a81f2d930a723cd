"""The Flask app factory: ``gunicorn 'api.app:create_app()'``."""

from __future__ import annotations

import logging

from flask import Flask

from api import auth, console, errors, health, notifications, openapi, requeue_jobs, stats, workers
from api import metrics as metrics_view
from api.console import session as console_session
from api.deps import Deps
from api.params import MAX_BODY_BYTES
from certctl_notify.db import make_sessions
from certctl_notify.environment import load_settings
from certctl_notify.metrics import for_process, scrape_registry
from certctl_notify.publish import CeleryDispatcher, Dispatcher, make_producer
from certctl_notify.settings import Settings

log = logging.getLogger("certctl_notify.api")


def create_app(settings: Settings | None = None, *, dispatcher: Dispatcher | None = None) -> Flask:
    """Build the API; ``settings`` default to the environment (read once, here)."""
    settings = settings or load_settings()
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    producer = make_producer(settings.broker_url, sentinel_master=settings.broker_sentinel_master)
    sessions = make_sessions(settings.database_url)
    metrics = for_process(settings.metrics_dir, "api")
    app.extensions["certctl"] = Deps(
        settings=settings,
        sessions=sessions,
        producer=producer,
        dispatcher=dispatcher or CeleryDispatcher(producer),
        metrics=metrics,
        scrape=scrape_registry(sessions, settings.broker_url, metrics, settings.metrics_dir,
                               sentinel_master=settings.broker_sentinel_master),
    )
    console_session.configure(app, settings)
    errors.init_app(app)
    auth.init_app(app)
    console.init_app(app)
    for blueprint in (health.bp, notifications.bp, requeue_jobs.bp, stats.bp, metrics_view.bp, workers.bp,
                      openapi.bp):
        app.register_blueprint(blueprint)
    if not settings.api.auth_enabled:
        log.warning("CERTCTL_AUTH_TYPE=none: the API accepts every request without a key (local use only)")
    elif not settings.api.keys:
        log.warning("no CERTCTL_API_KEYS configured: every /api/v1 request will be refused with 401")
    return app
