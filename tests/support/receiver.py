"""A real HTTP receiver on 127.0.0.1 whose answers each test scripts, keyed by certificate id."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  #: seconds to wait before answering (a slow peer)
    body: bytes = b"ok"


@dataclass
class Received:
    at: float  #: time.time() when the request arrived
    method: str
    path: str
    headers: dict
    body: bytes

    @property
    def json(self):
        return json.loads(self.body)

    @property
    def key(self):
        try:
            return self.json["data"]["certificate_id"]
        except (ValueError, KeyError, TypeError):
            return None


class Receiver:
    """``script(key, [503, 503, 200])`` answers requests for certificate ``key`` in that order (the
    last answer repeats); unscripted keys get 200."""

    def __init__(self):
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Answer]] = {}
        self.requests: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                got = Received(time.time(), "POST", self.path, dict(self.headers.items()), self.rfile.read(length))
                answer = receiver._next(got)
                if answer.delay:
                    time.sleep(answer.delay)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", str(len(answer.body)))
                    self.end_headers()
                    self.wfile.write(answer.body)
                except OSError:
                    pass  # the client gave up (timeout, killed worker): nothing to answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _next(self, got: Received) -> Answer:
        with self._lock:
            self.requests.append(got)
            script = self._scripts.get(got.key)
            if not script:
                return Answer()
            return script.pop(0) if len(script) > 1 else script[0]

    def script(self, key: str, answers: list) -> None:
        with self._lock:
            self._scripts[key] = [a if isinstance(a, Answer) else Answer(status=a) for a in answers]

    def for_key(self, key: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.key == key]

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
