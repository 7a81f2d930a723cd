#!/usr/bin/env python
"""An outage storm: ``--count`` alerts to a webhook that answers 503, with production-like waits.

    .venv/bin/python bench/storm.py --count 20000

For each way a retry can wait — held by the worker as a countdown (``CERTCTL_RETRY_HOLD_MAX=1h``, as
every retry did before) and kept in PostgreSQL (the default) — it enqueues the alerts, lets a real
``celery -A workers.app worker`` (prefork, concurrency 2) make every first attempt (waits of 30 s,
then 60 s, so no second attempt comes in the meantime), and prints the worker's RSS (main process and
pool) at the start, half-way and once every first attempt has failed, the messages Redis holds
unacknowledged for it, and how long one Slack alert sent then takes to be delivered. Everything runs
on 127.0.0.1 in a throw-away ``certctl_bench_<random>`` database and Redis db 12 (flushed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import BenchError, ScratchDatabase, process_tree, run_cleanup, run_guarded  # noqa: E402
from bench.throughput import Worker  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/12"
VARIANTS = {
    "held by the worker": {"CERTCTL_RETRY_HOLD_MAX": "1h", "CERTCTL_BROKER_VISIBILITY_TIMEOUT": "2h"},
    "kept in PostgreSQL": {},
}


class Receivers:
    """``/hook`` answers 503 (the channel that is down), ``/slack`` answers 200."""

    def __init__(self):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                self.rfile.read(int(self.headers.get("content-length") or 0))
                status = b"200 OK" if self.path == "/slack" else b"503 Service Unavailable"
                self.wfile.write(b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\n\r\n")

            def log_message(self, *args):
                """Silent."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Storm:
    def __init__(self, args):
        self.args = args
        self.failed = False
        self.tmp = Path(tempfile.mkdtemp(prefix="certctl-storm-"))
        self.database: ScratchDatabase | None = None
        self.worker: Worker | None = None
        self.receivers: Receivers | None = None

    def run(self) -> None:
        import redis

        results = {}
        for name, overrides in VARIANTS.items():
            redis.Redis.from_url(REDIS_URL).flushdb()
            self.database = ScratchDatabase().create()
            self.receivers = Receivers()
            try:
                results[name] = self.variant(name, overrides)
            finally:
                run_cleanup([("worker", self.stop_worker), ("receivers", self.receivers.stop),
                             ("database", self.database.drop)])
        print(json.dumps(results), flush=True)

    def variant(self, name: str, overrides: dict) -> dict:
        import redis

        from certctl_notify.db import make_sessions
        from certctl_notify.intake import enqueue_alert
        from certctl_notify.publish import CeleryDispatcher, make_producer

        env = {"PATH": os.environ.get("PATH", ""), "CERTCTL_DATABASE_URL": self.database.url,
               "CERTCTL_BROKER_URL": REDIS_URL, "CERTCTL_WEBHOOK_URL": f"{self.receivers.base}/hook",
               "CERTCTL_SLACK_WEBHOOK_URL": f"{self.receivers.base}/slack", "CERTCTL_OUTBOUND_ALLOW": "127.0.0.1/32",
               "CERTCTL_NOTIFICATION_RETRY_BASE": "30s", "CERTCTL_NOTIFICATION_RETRY_CAP": "60s",
               "CERTCTL_LOG_LEVEL": "WARNING", "CERTCTL_DATA_DIR": str(self.tmp), **overrides}
        sessions = make_sessions(self.database.url)
        producer = make_producer(REDIS_URL)
        dispatcher = CeleryDispatcher(producer)
        broker = redis.Redis.from_url(REDIS_URL)
        self.worker = Worker("workers.app", env, 2, self.tmp / "worker.log").start()
        if self.slack_latency(sessions, dispatcher, enqueue_alert) is None:  # warm-up: the worker is ready
            raise BenchError(f"{name}: the worker delivered nothing within --start-timeout")
        print(f"{name}: worker ready; enqueueing {self.args.count} alerts to the webhook that is down", flush=True)
        samples = {"start": self.rss_mb()}
        fields = {"type": "RenewalFailure", "channel": "Webhook", "message": "renewal failed"}
        for i in range(self.args.count):
            enqueue_alert(sessions, dispatcher, {**fields, "certificate_id": f"storm-{i}"})
        deadline = time.monotonic() + self.args.timeout
        while (failed := self.failed_rows(sessions)) < self.args.count:
            self.worker.check_alive()
            if "half-way" not in samples and failed >= self.args.count // 2:
                samples["half-way"] = self.rss_mb()
            if time.monotonic() > deadline:
                raise BenchError(f"{name}: only {failed} of {self.args.count} first attempts failed in time")
            time.sleep(0.5)
        samples["all failed"] = self.rss_mb()
        unacked = broker.hlen("unacked")
        latency = self.slack_latency(sessions, dispatcher, enqueue_alert)
        queued = broker.llen("certctl.deliver")
        shown = f"{latency * 1000:.0f} ms" if latency is not None else f"not within {self.args.start_timeout:g} s"
        print(f"{name}: worker RSS MB (main + pool) start {samples['start']:.1f}, half-way "
              f"{samples.get('half-way', samples['all failed']):.1f}, all failed {samples['all failed']:.1f}; "
              f"unacknowledged messages {unacked}, queued deliveries {queued}; a Slack alert sent then "
              f"delivered: {shown}", flush=True)
        producer.close()
        sessions.dispose()
        return {"rss_mb": samples, "unacked": unacked, "queued": queued,
                "slack_latency_ms": round(latency * 1000, 1) if latency is not None else None}

    @staticmethod
    def failed_rows(sessions) -> int:
        from sqlalchemy import text

        with sessions.begin() as s:
            return s.execute(text("SELECT count(*) FROM notification_events WHERE status = 'failed'")).scalar_one()

    def slack_latency(self, sessions, dispatcher, enqueue_alert) -> float | None:
        """Seconds from enqueueing a Slack alert to its row being sent; None if not within --start-timeout."""
        from sqlalchemy import text

        started = time.monotonic()
        [result] = enqueue_alert(sessions, dispatcher, {"type": "ExpirationWarning", "channel": "Slack",
                                                        "message": "expires soon"})
        while time.monotonic() - started < self.args.start_timeout:
            self.worker.check_alive()
            with sessions.begin() as s:
                status = s.execute(text("SELECT status FROM notification_events WHERE id = :i"),
                                   {"i": result.row.id}).scalar_one()
            if status == "sent":
                return time.monotonic() - started
            time.sleep(0.02)
        return None

    def rss_mb(self) -> float:
        return sum(p.memory_info().rss for p in process_tree(self.worker.proc)) / 2**20

    def stop_worker(self) -> None:
        if self.worker is not None and self.worker.proc is not None and self.worker.proc.poll() is None:
            for proc in reversed(process_tree(self.worker.proc)):
                proc.kill()
            self.worker.proc.wait(10)

    def cleanup(self) -> None:
        import redis

        run_cleanup([("worker", self.stop_worker), ("redis", lambda: redis.Redis.from_url(REDIS_URL).flushdb())])

    def logs(self):
        return [("worker log", self.worker.log_tail())] if self.worker is not None else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20000, help="alerts to the channel that is down")
    parser.add_argument("--timeout", type=float, default=900, help="seconds the first attempts may take")
    parser.add_argument("--start-timeout", type=float, default=60, help="seconds a Slack alert may take")
    parser.add_argument("--max-seconds", type=int, default=2400, help="hard limit for the whole run")
    args = parser.parse_args(argv)
    if args.count < 2:
        parser.error("--count must be at least 2")
    return run_guarded(Storm(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
