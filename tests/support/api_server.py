"""The API under test as a real HTTP server: gunicorn (several worker processes) in a subprocess, configured only
by environment, or werkzeug on a thread of the test process."""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.support.process import LoggedProcess


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GunicornProcess(LoggedProcess):
    """``gunicorn -c python:api.gunicorn_conf 'api.app:create_app()'`` with ``workers`` processes; ``python``
    names another interpreter (a virtualenv's) and the rest is `LoggedProcess`'s."""

    def __init__(self, env: dict, log_path: Path, *, workers: int = 2, python: str = sys.executable, **options):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([python, "-m", "gunicorn", "--config", "python:api.gunicorn_conf",
                          "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers), "api.app:create_app()"],
                         env, log_path, name="gunicorn", **options)

    def start(self, timeout: float = 30) -> GunicornProcess:
        self.launch(self._healthy, timeout)
        return self

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False


@contextmanager
def threaded_api(settings) -> Iterator[str]:
    """The API app for ``settings`` served by werkzeug on a thread of this process; yields its base URL.
    Cheaper than gunicorn, and still a real HTTP server for a client in another process."""
    from werkzeug.serving import make_server

    from api.app import create_app

    server = make_server("127.0.0.1", 0, create_app(settings), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
