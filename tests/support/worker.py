"""A real Celery worker (and optionally beat) in a subprocess, configured only by environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil


class WorkerProcess:
    """``celery -A workers.app worker`` with the given environment; ``stop()`` or ``kill()`` it."""

    def __init__(self, env: dict, log_path: Path, *, beat: bool = False, concurrency: int = 2):
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.args = [
            sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "prefork",
            "--concurrency", str(concurrency), "--loglevel", "INFO", "--without-gossip", "--without-mingle",
            "--hostname", f"test-{os.getpid()}-{time.monotonic_ns()}@%h",
        ]
        if beat:
            self.args += ["--beat", "--schedule", str(log_path.with_suffix(".beat"))]
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30) -> WorkerProcess:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()}")
            if " ready." in self.log():
                return self
            time.sleep(0.1)
        raise RuntimeError(f"worker not ready within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def children(self) -> list[psutil.Process]:
        return psutil.Process(self.proc.pid).children(recursive=True)

    def stop(self, timeout: float = 20) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def kill(self) -> None:
        """SIGKILL the worker and its pool: nothing it holds is acked or given back to the broker."""
        if self.proc and self.proc.poll() is None:
            for child in self.children():
                child.kill()
            self.proc.kill()
            self.proc.wait(10)
