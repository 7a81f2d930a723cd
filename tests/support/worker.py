"""A real Celery worker (and optionally beat) in a subprocess, configured only by environment."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil

from tests.support.process import LoggedProcess


class WorkerProcess(LoggedProcess):
    """``celery -A workers.app worker`` with the given environment; ``stop()`` or ``kill()`` it."""

    def __init__(self, env: dict, log_path: Path, *, beat: bool = False, concurrency: int = 2):
        args = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "prefork",
            "--concurrency", str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            "--hostname", f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
        ]
        if beat:
            args += ["--beat", "--schedule", str(log_path.with_suffix(".beat"))]
        super().__init__(args, env, log_path, name="worker")

    def start(self, timeout: float = 30) -> WorkerProcess:
        self.launch(lambda: " ready." in self.log(), timeout)
        return self

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def kill(self) -> None:
        """SIGKILL the worker and its pool: nothing it holds is acked or given back to the broker."""
        if self.proc and self.proc.poll() is None:
            for child in self.children():
                child.kill()
            self.proc.kill()
            self.proc.wait(10)
