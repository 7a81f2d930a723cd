"""Worker signal handlers, connected by `make_celery` (never at import)."""

from __future__ import annotations

import logging
import warnings

from celery import signals
from celery.exceptions import CPendingDeprecationWarning

from certctl_notify import logs, metrics
from certctl_notify.config import Settings
from workers.runtime import Runtime

log = logging.getLogger("certctl_notify.worker")


def connect(runtime: Runtime, settings: Settings) -> None:
    def on_worker_init(**_):
        # In the main process, before the pool forks: every pool process writes its counters under
        # this worker's directory, emptied of the previous run's files.
        if settings.metrics_dir is not None:
            metrics.enable_multiprocess(settings.metrics_dir, "worker", clean=True)
        else:
            log.warning("CERTCTL_METRICS_DIR is not set: this worker's counters reach no /metrics scrape")

    def on_process_shutdown(pid=None, **_):
        if settings.metrics_dir is not None:
            metrics.mark_process_dead(settings.metrics_dir, "worker", pid)

    def on_process_init(**_):
        runtime.after_fork()

    def on_prerun(task_id=None, task=None, args=None, **_):
        logs.bind(task_id=task_id, task=task.name if task else None)
        if task is not None and task.name.endswith(".deliver") and args:
            logs.bind(notification_id=args[0])

    def on_postrun(**_):
        logs.clear()

    def on_worker_ready(**_):
        # Celery warns on every broker connection loss that worker_cancel_long_running_tasks_on_connection_loss
        # defaults to True in Celery 6; we pin it to False and check it at start-up (workers/config.py), so in
        # an outage the warning only adds a misleading paragraph. Filtered here, after Celery's logging
        # set-up has turned all its deprecation warnings to "always".
        warnings.filterwarnings("ignore", message=r"\s*In Celery 5\.1 we introduced an optional breaking change",
                                category=CPendingDeprecationWarning)

    def on_setup_logging(**_):
        # Connecting here stops Celery from installing its own root handler.
        logs.configure_logging(settings.log_format, settings.log_level)

    # weak=False: these closures live only as long as the signal holds them.
    signals.worker_init.connect(on_worker_init, weak=False)
    signals.worker_process_shutdown.connect(on_process_shutdown, weak=False)
    signals.worker_process_init.connect(on_process_init, weak=False)
    signals.task_prerun.connect(on_prerun, weak=False)
    signals.task_postrun.connect(on_postrun, weak=False)
    signals.setup_logging.connect(on_setup_logging, weak=False)
    signals.worker_ready.connect(on_worker_ready, weak=False)
