"""Worker signal handlers, connected by `make_celery` (never at import)."""

from __future__ import annotations

from celery import signals

from certctl_notify import logs
from certctl_notify.config import Settings
from workers.runtime import Runtime


def connect(runtime: Runtime, settings: Settings) -> None:
    def on_process_init(**_):
        runtime.after_fork()

    def on_prerun(task_id=None, task=None, args=None, **_):
        logs.bind(task_id=task_id, task=task.name if task else None)
        if task is not None and task.name.endswith(".deliver") and args:
            logs.bind(notification_id=args[0])

    def on_postrun(**_):
        logs.clear()

    def on_setup_logging(**_):
        # Connecting here stops Celery from installing its own root handler.
        logs.configure_logging(settings.log_format, settings.log_level)

    # weak=False: these closures live only as long as the signal holds them.
    signals.worker_process_init.connect(on_process_init, weak=False)
    signals.task_prerun.connect(on_prerun, weak=False)
    signals.task_postrun.connect(on_postrun, weak=False)
    signals.setup_logging.connect(on_setup_logging, weak=False)
