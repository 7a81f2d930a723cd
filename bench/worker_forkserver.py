#!/usr/bin/env python
"""A fork server for the kill race of ``bench/chaos.py``: imports Celery and the worker's code once, then
forks one fresh ``celery -A workers.app worker`` per request, so each starts in a few tenths of a second
instead of ~2 s (most of a cold start is importing Celery, Flower's CLI plug-in, SQLAlchemy …).

Started with cwd and PYTHONPATH at the checkout's root, so what it imports (and the workers it forks
run) is that checkout's code; it refuses to serve if ``workers`` or ``certctl_notify`` come from
elsewhere, or if importing started a thread (forking then would be unsafe). Protocol: one JSON line
``{"argv": ["celery", "-A", "workers.app", "worker", …], "env": {…}, "log": "/path"}`` per worker on
stdin, answered with the forked worker's pid on stdout; it exits at the end of its input.

Each worker gets a session of its own, exactly the environment given (nothing inherited from the fork
server), stdin from /dev/null and stdout + stderr appended to ``log``, then runs Celery's own ``main``.
Importing modules is all the fork server does before forking: no setting is read, no app built, no
connection opened (see tests/test_layout.py). The kernel reaps the workers (SIGCHLD is ignored here and
restored in each worker, whose prefork pool needs it).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _preload() -> None:
    """Import what a worker imports on its way to "ready" (none of it reads a setting), then freeze what
    was imported out of the garbage collector's reach: a collection in a forked worker would otherwise
    walk (and copy, page by page) every object it inherited, a pause a cold-started worker never has."""
    gc.disable()
    import celery.__main__  # noqa: F401
    import celery.apps.worker  # noqa: F401
    import celery.bin.celery  # noqa: F401
    import celery.concurrency.prefork  # noqa: F401
    import celery.worker.consumer  # noqa: F401
    import kombu.transport.redis  # noqa: F401
    import sqlalchemy.dialects.postgresql.psycopg2  # noqa: F401

    import certctl_notify
    import workers
    import workers.app  # noqa: F401
    import workers.factory  # noqa: F401

    for module in (certctl_notify, workers):
        if not Path(module.__file__).resolve().is_relative_to(ROOT):
            sys.exit(f"worker_forkserver: {module.__name__} is imported from {module.__file__}, not from {ROOT}")
    if threading.active_count() != 1:
        sys.exit("worker_forkserver: importing started a thread; forking would be unsafe")
    gc.freeze()


def _run_worker(request: dict) -> None:
    """In the forked child: become the worker the request describes; never returns."""
    code = 1
    try:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        gc.enable()
        os.setsid()
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        os.chdir(ROOT)
        os.environ.clear()
        os.environ.update(request["env"])
        sys.argv = list(request["argv"])
        import celery.__main__

        celery.__main__.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        with_flush = (sys.stdout, sys.stderr)
        for stream in with_flush:
            with contextlib.suppress(Exception):  # the log may be gone; exiting matters more
                stream.flush()
        os._exit(code)


def main() -> int:
    _preload()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _run_worker(request)
        print(pid, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
