#!/usr/bin/env python
"""Intake over the broker: how fast one worker stores alerts sent with a bare ``send_task``.

    .venv/bin/python bench/intake.py --count 3000 [--code-root PATH]

Publishes ``--count`` ``certctl_notify.enqueue`` messages with a Celery app that holds only the broker
URL, then starts one ``celery -A workers.app worker`` (prefork, ``--concurrency``) consuming only the
intake queue, and times until every alert is a row. ``--code-root`` runs the worker from another
checkout (e.g. a worktree of an older commit, to compare with intake consumed by Celery's own
consumer). Throw-away ``certctl_bench_<random>`` database, Redis db 12 (flushed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import BenchError, ScratchDatabase, run_cleanup, run_guarded  # noqa: E402
from bench.throughput import Worker  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/12"


class IntakeBench:
    def __init__(self, args):
        self.args = args
        self.database = ScratchDatabase()
        self.tmp = Path(tempfile.mkdtemp(prefix="certctl-intake-"))
        self.worker: Worker | None = None

    def run(self) -> None:
        import redis
        from celery import Celery
        from sqlalchemy import create_engine, func, select

        from certctl_notify.model import events

        self.database.create()
        broker = redis.Redis.from_url(REDIS_URL)
        broker.flushdb()
        producer = Celery("bench-producer", broker=REDIS_URL, set_as_current=False)
        started = time.perf_counter()
        for n in range(self.args.count):
            producer.send_task("certctl_notify.enqueue", kwargs={
                "type": "ExpirationWarning", "channel": "Webhook", "message": f"alert {n}",
                "certificate_id": f"bench-{n}"})
        publish_seconds = time.perf_counter() - started
        code_root = Path(self.args.code_root).resolve() if self.args.code_root else ROOT
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(code_root),
               "CERTCTL_DATABASE_URL": self.database.url, "CERTCTL_BROKER_URL": REDIS_URL,
               "CERTCTL_LOG_LEVEL": "WARNING", "CERTCTL_DATA_DIR": str(self.tmp)}
        self.worker = Worker("workers.app", env, self.args.concurrency, self.tmp / "worker.log", cwd=code_root)
        self.worker.args += ["--queues", "celery"]
        engine = create_engine(self.database.url)
        self.worker.start()
        first = done = None
        deadline = time.monotonic() + self.args.timeout
        while time.monotonic() < deadline:
            self.worker.check_alive()
            with engine.connect() as conn:
                stored = conn.execute(select(func.count()).select_from(events)).scalar_one()
            now = time.perf_counter()
            if stored and first is None:
                first = (now, stored)
            if stored >= self.args.count:
                done = now
                break
            time.sleep(0.05)
        engine.dispose()
        if done is None or first is None:
            raise BenchError(f"only {stored} of {self.args.count} alerts stored within {self.args.timeout}s")
        rate = (self.args.count - first[1]) / (done - first[0]) if done > first[0] else float("inf")
        figures = {"count": self.args.count, "concurrency": self.args.concurrency, "code_root": str(code_root),
                   "publish_per_second": round(self.args.count / publish_seconds, 1),
                   "stored_per_second": round(rate, 1)}
        print(f"published {self.args.count} alerts in {publish_seconds:.2f} s "
              f"({figures['publish_per_second']}/s); one worker (concurrency {self.args.concurrency}) stored them "
              f"at {figures['stored_per_second']} alerts/s (from its first row to its last)")
        print(json.dumps(figures))

    def cleanup(self) -> bool:
        return run_cleanup([("worker", lambda: self.worker and self.worker.stop()),
                            ("database", self.database.drop)])

    def logs(self):
        return [("worker", self.worker.log_tail())] if self.worker else []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--code-root", help="run the worker from this checkout instead of this one")
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--max-seconds", type=int, default=600)
    args = parser.parse_args(argv)
    return run_guarded(IntakeBench(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
