"""A real Celery worker (and optionally beat) in a subprocess, configured only by environment."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path

import psutil

from tests.support.process import LoggedProcess


class WorkerProcess(LoggedProcess):
    """``celery -A workers.app worker`` with the given environment; ``stop()`` or ``kill()`` it."""

    def __init__(self, env: dict, log_path: Path, *, beat: bool = False, concurrency: int = 2,
                 pool: str = "prefork", queues: str | None = None):
        args = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", pool,
            "--concurrency", str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            "--hostname", f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
        ]
        if queues:
            args += ["--queues", queues]
        if beat:
            args += ["--beat", "--schedule", str(log_path.with_suffix(".beat"))]
        super().__init__(args, env, log_path, name="worker")
        self.beat = beat
        self._orphans: list[psutil.Process] = []

    def start(self, timeout: float = 30) -> WorkerProcess:
        self.launch(self.is_ready, timeout)
        return self

    def is_ready(self) -> bool:
        return " ready." in self.log()

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def kill(self) -> None:
        """SIGKILL the worker and its pool: nothing it holds is acked or given back to the broker."""
        if self.proc and self.proc.poll() is None:
            self._orphans += self.children()
            self.proc.kill()
            self.proc.wait(10)
        for child in self._orphans:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        self._orphans = []

    def remember_pool(self) -> None:
        """Note the pool processes now, so that `kill` finds them after `kill_main` orphaned them."""
        self._orphans += self.children()

    def kill_main(self, *, wait: bool = True) -> None:
        """SIGKILL the main process only (where the broker is consumed), at once, as its crash would; the
        pool processes it leaves (`remember_pool` them first) are killed by `kill`. ``wait=False``
        does not reap it (to kill several at the same instant)."""
        self.proc.kill()
        if wait:
            self.proc.wait(10)
