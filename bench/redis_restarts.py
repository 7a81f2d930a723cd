#!/usr/bin/env python
"""Does a worker survive Redis restarting under it again and again?

    .venv/bin/python bench/redis_restarts.py --runs 8 --restarts 15

Each run starts a Redis of its own (a free port, no persistence), one ``celery -A workers.app worker``
(prefork, concurrency 2) and a producer storing ~100 webhook alerts/s through ``enqueue_alert`` (a
receiver answering 200 after 50 ms, so sends are in flight), then SIGKILLs and restarts that Redis every
``--interval`` s. It prints, per run, whether the worker was still running after ``--restarts``
restarts (or after which one it exited) and how many times the worker's Redis transport turned kombu's
AttributeError on a dropped connection into a lost connection. ``--code-root`` runs the worker from
another checkout. Throw-away ``certctl_bench_<random>`` database on the machine's PostgreSQL.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import ScratchDatabase  # noqa: E402

GUARD_LINE = "the broker connection of this channel was closed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowReceiver(ThreadingHTTPServer):
    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                time.sleep(0.05)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                """Silent."""

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def one_run(args, database_url: str, receiver: SlowReceiver, log_path: Path) -> str:
    from certctl_notify.db import make_sessions
    from certctl_notify.intake import enqueue_alert
    from certctl_notify.publish import CeleryDispatcher, make_producer

    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="certctl-restarts-"))

    def start_redis():
        return subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                 "--dir", str(tmp)], stdout=subprocess.DEVNULL)

    redis_server = start_redis()
    time.sleep(0.5)
    url = f"redis://127.0.0.1:{port}/0"
    code_root = Path(args.code_root).resolve() if args.code_root else ROOT
    env = {**os.environ, "PYTHONPATH": str(code_root), "CERTCTL_DATABASE_URL": database_url,
           "CERTCTL_BROKER_URL": url, "CERTCTL_WEBHOOK_URL": f"http://127.0.0.1:{receiver.server_address[1]}/hook",
           "CERTCTL_OUTBOUND_ALLOW": "127.0.0.1/32", "CERTCTL_DATA_DIR": str(tmp),
           "CERTCTL_TASK_TIME_LIMIT": "8s", "CERTCTL_CLAIM_LEASE": "10s"}
    with open(log_path, "w") as log:
        worker = subprocess.Popen([sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "prefork",
                                   "--concurrency", "2", "-l", "INFO", "--without-gossip", "--without-mingle"],
                                  cwd=code_root, env=env, stdout=log, stderr=subprocess.STDOUT)
    sessions = make_sessions(database_url)
    dispatcher = CeleryDispatcher(make_producer(url))
    stop = threading.Event()

    def produce():
        n = 0
        while not stop.is_set():
            # a failed publish (Redis down) is the sweep's business, not this bench's
            with contextlib.suppress(Exception):
                enqueue_alert(sessions, dispatcher, {"type": "Revocation", "channel": "Webhook", "message": f"m{n}"})
            n += 1
            stop.wait(0.01)

    time.sleep(4)
    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    outcome = f"worker running after {args.restarts} restarts"
    try:
        for restart in range(1, args.restarts + 1):
            time.sleep(args.interval)
            redis_server.kill()
            redis_server.wait()
            redis_server = start_redis()
            if worker.poll() is not None:
                outcome = f"worker EXITED with {worker.returncode} after restart {restart}"
                break
    finally:
        stop.set()
        producer.join(2)
        worker.kill()
        worker.wait()
        redis_server.kill()
        redis_server.wait()
        sessions.dispose()
    guarded = log_path.read_text(errors="replace").count(GUARD_LINE)
    return f"{outcome}; dropped-connection errors turned into a lost connection: {guarded}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--restarts", type=int, default=15)
    parser.add_argument("--interval", type=float, default=2.5)
    parser.add_argument("--code-root", help="run the worker from this checkout instead of this one")
    args = parser.parse_args(argv)
    database = ScratchDatabase().create()
    receiver = SlowReceiver()
    logs = Path(tempfile.mkdtemp(prefix="certctl-restarts-logs-"))
    exited = 0
    try:
        for run in range(1, args.runs + 1):
            line = one_run(args, database.url, receiver, logs / f"worker{run}.log")
            exited += "EXITED" in line
            print(f"run {run}: {line}", flush=True)
    finally:
        receiver.shutdown()
        database.drop()
    print(f"{exited} of {args.runs} runs lost their worker (logs in {logs})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
