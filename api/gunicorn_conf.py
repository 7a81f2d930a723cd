"""Gunicorn hooks of the API: ``gunicorn -c python:api.gunicorn_conf 'api.app:create_app()'``.

With ``CERTCTL_METRICS_DIR`` set, the master folds the previous run's counts into this host's API
metrics directory's archive once, before any worker forks, and folds each exiting worker's in. The
workers create their counters in `api.app.create_app`, so ``/metrics`` adds up every worker whichever
one answers the scrape.
"""

from __future__ import annotations

from certctl_notify import metrics
from certctl_notify.environment import load_settings


def on_starting(server):
    """In the master, before the first fork: the previous run's counts kept, its files folded."""
    settings = load_settings()
    if settings.metrics_dir is not None:
        metrics.enable_multiprocess(settings.metrics_dir, "api", fold=True)


def child_exit(server, worker):
    """In the master, when a worker exits: its counts stay in the totals, its live state is dropped."""
    settings = load_settings()
    if settings.metrics_dir is not None:
        metrics.mark_process_dead(settings.metrics_dir, "api", worker.pid)
