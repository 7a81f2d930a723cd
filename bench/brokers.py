"""Delivery throughput and latency on each broker, side by side in one run.

    .venv/bin/python -m bench.brokers [--brokers redis,rabbitmq] [--count 3000] [--latency-count 1500]

For each broker it makes a throw-away ``certctl_bench_<random>`` database, a broker of its own (a free db
of the machine's Redis, claimed; a fresh vhost of the machine's RabbitMQ) and a webhook receiver that
answers 200 at once, and starts one ``celery -A workers.app worker`` (prefork, ``--concurrency`` 2; no
beat: nothing is retried). Then:

1. **throughput**: ``--count`` alerts taken through intake (``enqueue_alert``: commit the row, then
   publish, from ``--senders`` threads) as fast as they go; notifications/s = count / (first enqueue →
   last delivery);
2. **latency at half load**: ``--latency-count`` alerts offered at half that rate; for each, enqueue →
   its request at the receiver (p50, p99, max).

It prints a table per broker; the last line is one JSON object. Everything it made is removed at the end.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    BenchError,
    ReceiverProcess,
    ScratchDatabase,
    ScratchRedisDb,
    run_cleanup,
    run_guarded,
)

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"certctl-bench-brokers-secret-01").decode()
RABBITMQ_BASE_URL = os.environ.get("CERTCTL_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672")


def alert(tag: str, n: int) -> dict:
    return {"type": "ExpirationWarning", "channel": "Webhook", "message": f"certificate {tag}-{n} expires in 7 days",
            "certificate_id": f"{tag}-{n}", "severity": "warning"}


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class BrokerRun:
    """One broker's services, worker and measurements."""

    def __init__(self, broker: str, args, tmp: Path):
        self.broker, self.args, self.tmp = broker, args, tmp / broker
        self.tmp.mkdir(parents=True)
        self.db = ScratchDatabase()
        self.redis_db: ScratchRedisDb | None = None
        self.vhost: str | None = None
        self.receiver: ReceiverProcess | None = None
        self.worker: subprocess.Popen | None = None
        self.sessions = None
        self.producer = None

    def broker_url(self) -> str:
        if self.broker == "redis":
            self.redis_db = ScratchRedisDb("bench/brokers.py", seconds=self.args.max_seconds).claim()
            return self.redis_db.url
        self.vhost = f"certctl_bench_{uuid.uuid4().hex[:8]}"
        rabbitmqctl("add_vhost", self.vhost)
        rabbitmqctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")
        return f"{RABBITMQ_BASE_URL}/{self.vhost}"

    def start(self) -> None:
        from certctl_notify.db import make_sessions
        from certctl_notify.environment import load_settings
        from certctl_notify.publish import CeleryDispatcher, make_producer

        self.db.create()
        self.receiver = ReceiverProcess(WEBHOOK_SECRET)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_")}
        env.update({"CERTCTL_DATABASE_URL": self.db.url, "CERTCTL_BROKER_URL": self.broker_url(),
                    "CERTCTL_WEBHOOK_URL": self.receiver.url, "CERTCTL_WEBHOOK_SECRET": WEBHOOK_SECRET,
                    "CERTCTL_OUTBOUND_ALLOW": "127.0.0.1/32", "CERTCTL_LOG_LEVEL": "WARNING",
                    "CERTCTL_DATA_DIR": str(self.tmp / "data")})
        settings = load_settings(env)
        self.sessions = make_sessions(settings.database_url)
        self.producer = make_producer(settings.broker_url)
        self.dispatcher = CeleryDispatcher(self.producer)
        self.log = open(self.tmp / "worker.log", "wb")
        self.worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "prefork", "--concurrency",
             str(self.args.concurrency), "--queues", "celery,certctl.deliver,certctl.control", "--loglevel",
             "WARNING", "--without-gossip", "--without-mingle", "--hostname", f"bench-{self.broker}@%h"],
            env=env, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.enqueue_many("warmup", 20, threads=1)
        self.wait_delivered(20, "the warm-up")

    def enqueue_many(self, tag: str, count: int, *, threads: int, rate: float | None = None) -> dict[str, float]:
        """Enqueue ``count`` alerts; returns notification id → monotonic enqueue time."""
        from certctl_notify.intake import enqueue_alert

        started: dict[str, float] = {}
        lock = threading.Lock()
        begin = time.monotonic()
        numbers = iter(range(count))

        def sender():
            while True:
                with lock:
                    n = next(numbers, None)
                if n is None:
                    return
                if rate:
                    delay = begin + n / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                at = time.monotonic()
                [result] = enqueue_alert(self.sessions, self.dispatcher, alert(tag, n))
                with lock:
                    started[result.row.id] = at

        pool = [threading.Thread(target=sender) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        return started

    def wait_delivered(self, total: int, what: str) -> float:
        deadline = time.monotonic() + self.args.timeout
        while self.receiver.count() < total:
            if self.worker.poll() is not None:
                raise BenchError(f"{self.broker} worker exited: {(self.tmp / 'worker.log').read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.broker}: {what} not delivered within {self.args.timeout:g} s "
                                 f"({self.receiver.count()} of {total})")
            time.sleep(0.02)
        return time.monotonic()

    def measure(self) -> dict:
        before = self.receiver.count()
        begin = time.monotonic()
        self.enqueue_many("load", self.args.count, threads=self.args.senders)
        enqueued_s = time.monotonic() - begin
        end = self.wait_delivered(before + self.args.count, "the load")
        rate = self.args.count / (end - begin)
        before = self.receiver.count()
        half = rate / 2
        started = self.enqueue_many("paced", self.args.latency_count, threads=self.args.senders, rate=half)
        self.wait_delivered(before + self.args.latency_count, "the paced alerts")
        arrived: dict[str, float] = {}
        for record in self.receiver.records():
            if record.notification_id in started:
                arrived.setdefault(record.notification_id, record.at)
        latencies = [arrived[i] - started[i] for i in started]
        duplicates = len(self.receiver.records()) - len({r.notification_id for r in self.receiver.records()})
        return {"notifications_per_s": round(rate, 1), "enqueue_s": round(enqueued_s, 2),
                "half_load_per_s": round(half, 1), "latency_p50_ms": round(statistics.median(latencies) * 1000, 1),
                "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
                "latency_max_ms": round(max(latencies) * 1000, 1), "duplicates": duplicates}

    def cleanup(self) -> None:
        if getattr(self, "_cleaned", False):
            return
        self._cleaned = True
        steps = [
            ("stop worker", lambda: self.worker and (self.worker.terminate(), self.worker.wait(30))),
            ("close log", lambda: getattr(self, "log", None) and self.log.close()),
            ("close producer", lambda: self.producer and self.producer.close()),
            ("dispose engine", lambda: self.sessions and self.sessions.dispose()),
            ("stop receiver", lambda: self.receiver and self.receiver.stop()),
            ("release redis db", lambda: self.redis_db and self.redis_db.release()),
            ("delete vhost", lambda: self.vhost and rabbitmqctl("delete_vhost", self.vhost)),
            ("drop database", self.db.drop),
        ]
        run_cleanup(steps)


class Bench:
    def __init__(self, args):
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="certctl-bench-brokers-"))
        self.runs: list[BrokerRun] = []
        self.failed = False

    def logs(self):
        return [(f"{run.broker} worker.log", (run.tmp / "worker.log").read_text(errors="replace")[-3000:])
                for run in self.runs if (run.tmp / "worker.log").exists()]

    def cleanup(self) -> None:
        for run in self.runs:
            run.cleanup()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run(self) -> None:
        results = {}
        for broker in self.args.brokers.split(","):
            run = BrokerRun(broker, self.args, self.tmp)
            self.runs.append(run)
            print(f"{broker}: starting …", flush=True)
            run.start()
            results[broker] = run.measure()
            run.cleanup()
            r = results[broker]
            print(f"  {broker:9s} {r['notifications_per_s']:8.1f} notifications/s (enqueue took {r['enqueue_s']} s); "
                  f"at {r['half_load_per_s']}/s enqueue→delivered p50 {r['latency_p50_ms']} ms, p99 "
                  f"{r['latency_p99_ms']} ms, max {r['latency_max_ms']} ms; duplicates {r['duplicates']}", flush=True)
        print(json.dumps({"count": self.args.count, "concurrency": self.args.concurrency, "results": results}))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--brokers", default="redis,rabbitmq", help="comma-separated: redis, rabbitmq")
    parser.add_argument("--count", type=int, default=3000, help="alerts of the throughput phase")
    parser.add_argument("--latency-count", type=int, default=1500, help="alerts offered at half load")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool size of the worker")
    parser.add_argument("--senders", type=int, default=4, help="threads enqueueing")
    parser.add_argument("--timeout", type=float, default=300, help="seconds a phase may take")
    parser.add_argument("--max-seconds", type=int, default=1800, help="hard limit for the whole run")
    args = parser.parse_args(argv)
    if not set(args.brokers.split(",")) <= {"redis", "rabbitmq"}:
        parser.error("--brokers takes redis and/or rabbitmq")
    return run_guarded(Bench(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
