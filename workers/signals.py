"""Worker signal handlers, connected once per process by `make_celery` (never at import)."""

from __future__ import annotations

import logging
import warnings

from celery import signals
from celery.exceptions import CPendingDeprecationWarning

from certctl_notify import logs, metrics
from certctl_notify.settings import Settings
from workers.runtime import Runtime

log = logging.getLogger("certctl_notify.worker")


#: The runtime of the app this process runs: the last one `install`ed (one app per worker process).
_runtime: Runtime | None = None


def install(runtime: Runtime) -> None:
    """Route this process's worker signals to ``runtime``; the handlers are connected once per process,
    however many apps are built (each build only changes where they route)."""
    global _runtime
    _runtime = runtime
    for signal, handler in _HANDLERS:
        # weak=False: module functions live as long as the process; dispatch_uid: connected once
        signal.connect(handler, weak=False, dispatch_uid=f"certctl_notify.{handler.__name__}")


def _settings() -> Settings:
    return _runtime.settings


def _metrics_root():
    """Where this worker's processes keep their counters: CERTCTL_METRICS_DIR (shared with the API), or
    with only CERTCTL_WORKER_METRICS_PORT set a directory of the worker's own under its data directory."""
    settings = _settings()
    if settings.metrics_dir is not None:
        return settings.metrics_dir
    return settings.data_dir / "metrics" if settings.worker.metrics_port else None


def on_worker_init(**_):
    # In the main process, before the pool forks: every pool process writes its counters under
    # this worker's directory, where the previous run's counts are kept (folded into an archive).
    root = _metrics_root()
    if root is not None:
        metrics.enable_multiprocess(root, "worker", fold=True)
    else:
        log.warning("neither CERTCTL_METRICS_DIR nor CERTCTL_WORKER_METRICS_PORT is set: this worker's "
                    "counters reach no /metrics scrape")


def on_process_shutdown(pid=None, **_):
    root = _metrics_root()
    if root is not None:
        metrics.mark_process_dead(root, "worker", pid)


def on_process_init(**_):
    _runtime.after_fork()


def on_prerun(task_id=None, task=None, args=None, **_):
    logs.bind(task_id=task_id, task=task.name if task else None)
    if task is not None and task.name.endswith(".deliver") and args:
        logs.bind(notification_id=args[0])


def on_postrun(**_):
    logs.clear()


def on_worker_ready(**_):
    port = _settings().worker.metrics_port
    if port:
        metrics.serve_worker_metrics(_metrics_root(), port)
        log.info("this worker's counters are served on :%d/metrics", port)
    # Celery warns on every broker connection loss that worker_cancel_long_running_tasks_on_connection_loss
    # defaults to True in Celery 6; we pin it to False and check it at start-up (workers/config.py), so in
    # an outage the warning only adds a misleading paragraph. Filtered here, after Celery's logging
    # set-up has turned all its deprecation warnings to "always".
    warnings.filterwarnings("ignore", message=r"\s*In Celery 5\.1 we introduced an optional breaking change",
                            category=CPendingDeprecationWarning)


def on_setup_logging(**_):
    # Connecting here stops Celery from installing its own root handler.
    logs.configure_logging(_settings().log_format, _settings().log_level)


_HANDLERS = (
    (signals.worker_init, on_worker_init),
    (signals.worker_process_shutdown, on_process_shutdown),
    (signals.worker_process_init, on_process_init),
    (signals.task_prerun, on_prerun),
    (signals.task_postrun, on_postrun),
    (signals.setup_logging, on_setup_logging),
    (signals.worker_ready, on_worker_ready),
)
