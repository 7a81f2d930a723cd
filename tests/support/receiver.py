"""A real HTTP receiver on 127.0.0.1 whose answers each test scripts, keyed by certificate id."""

from __future__ import annotations

import json
import socket
import ssl
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
    last answer repeats); unscripted keys get 200. ``tls`` (a server context) makes it an https peer."""

    def __init__(self, *, tls: ssl.SSLContext | None = None):
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
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/hook"
        # a short poll: stop() waits for the serving loop's next poll, and every test stops one
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

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

    def reset(self) -> None:
        """Forget requests and scripts, so one receiver can serve several tests."""
        with self._lock:
            self.requests.clear()
            self._scripts.clear()

    def for_key(self, key: str) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if r.key == key]

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RawPeer:
    """A TCP peer that runs ``handle(conn)`` on each accepted connection (in its own thread), for
    answers the scripted `Receiver` cannot give: an endless body, silence, a trickle, raw headers.

    ``accept=False`` listens but never accepts: the handshake completes in the backlog and the
    request is never answered (a hung peer). ``connections`` counts the connections accepted.
    """

    def __init__(self, handle=None, *, host: str = "127.0.0.1", accept: bool = True):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.create_server((host, 0), family=family, backlog=16)
        self.port = self._sock.getsockname()[1]
        self.host = host
        self.connections = 0
        self._handle = handle
        self._accept = accept
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, path: str = "/hook") -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{path}"

    def _serve(self) -> None:
        while self._accept:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # stopped
            self.connections += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        with conn:
            try:
                self._handle(conn)
            except OSError:
                pass  # the client went away, which is what several tests provoke

    def start(self) -> RawPeer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._accept = False
        self._sock.close()


def read_request(conn: socket.socket) -> bytes:
    """The raw request (head and Content-Length body) read from ``conn``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def port_of(receiver) -> int:
    return receiver.server.server_address[1]


def headers_of(got) -> dict:
    """A received request's headers by lower-case name (HTTP names are case-insensitive)."""
    return {name.lower(): value for name, value in got.headers.items()}
