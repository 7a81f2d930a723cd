"""A service under test in a subprocess: output to a log file, started when it says it is ready."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class LoggedProcess:
    """``args`` with ``env`` added to this environment (or to ``base_env``), run in ``cwd``; stdout and
    stderr go to ``log_path``."""

    def __init__(self, args: list[str], env: dict, log_path: Path, *, name: str, cwd: Path | None = None,
                 base_env: dict | None = None):
        self.args = args
        self.env = {**(os.environ if base_env is None else base_env), **env}
        self.cwd = cwd
        self.log_path = log_path
        self.name = name
        self.proc: subprocess.Popen | None = None
        self._log = None

    def launch(self, ready: Callable[[], bool], timeout: float) -> None:
        """Start it and wait until ``ready()``; fail with its log if it exits or is not ready in time."""
        self.spawn()
        self.wait_ready(ready, timeout)

    def spawn(self) -> None:
        """Start it without waiting (several processes can then start side by side)."""
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            if ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, then `kill` if it has not exited within ``timeout`` s."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log is not None:
            self._log.close()
            self._log = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
