#!/usr/bin/env python
"""How long one ``GET /metrics`` takes with 100,000 notifications in the table (target: under 50 ms).

    .venv/bin/python bench/metrics_scrape.py [--rows 100000] [--scrapes 50] [--processes 4]

Creates a throw-away PostgreSQL database ``certctl_bench_<random>`` on 127.0.0.1, migrates it, loads
``--rows`` rows of mixed statuses with COPY and runs ``VACUUM ANALYZE`` (the state autovacuum keeps a
live table in). The API runs in this process (Flask test client) in multiprocess mode on a temporary
metrics directory that ``--processes`` forked "pool processes" have written counters to, so each
scrape does the real work: the grouped database query, Redis ``LLEN`` of both queues (db 12, only
read) and the merge of every process's counter files. Prints p50/p95/max over ``--scrapes`` scrapes
after one warm-up, the SQL statements per scrape, and a final JSON line. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, event, text  # noqa: E402

from api.app import create_app  # noqa: E402
from bench.common import ScratchDatabase  # noqa: E402
from certctl_notify.environment import load_settings  # noqa: E402
from certctl_notify.metrics import Metrics  # noqa: E402
from certctl_notify.model import Outcome  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/12"
TARGET_MS = 50.0
#: Share of each status in the loaded table (the rest is ``sent``).
MIX = (("dead", 0.10), ("failed", 0.08), ("pending", 0.07), ("read", 0.05))
CHANNELS = ("Email", "Webhook", "Slack", "Teams", "PagerDuty", "OpsGenie")


def load_rows(url: str, count: int) -> None:
    """COPY ``count`` rows into notification_events, then VACUUM ANALYZE."""
    now = datetime.now(UTC)
    buffer = io.StringIO()
    bounds, edge = [], 0.0
    for status, share in MIX:
        edge += share
        bounds.append((edge, status))
    for i in range(count):
        fraction = (i % 1000) / 1000
        status = next((s for edge, s in bounds if fraction < edge), "sent")
        created = now - timedelta(seconds=count - i)
        next_retry = (now + timedelta(minutes=(-1) ** i)).isoformat() if status == "failed" else r"\N"
        retries = 5 if status == "dead" else 1 if status == "failed" else 0
        buffer.write("\t".join([f"notif_{uuid.uuid4().hex}", "ExpirationWarning", f"cert-{i % 5000}",
                                CHANNELS[i % len(CHANNELS)], f"certificate cert-{i % 5000} expires in 7 days",
                                status, str(retries), next_retry, created.isoformat(), created.isoformat()]) + "\n")
    buffer.seek(0)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert("COPY notification_events (id, type, certificate_id, channel, message, status, "
                               "retry_count, next_retry_at, created_at, updated_at) FROM STDIN", buffer)
        raw.commit()
    finally:
        raw.close()
    with engine.connect() as conn:
        conn.execute(text("VACUUM ANALYZE notification_events"))
    engine.dispose()


def write_pool_counters(processes: int) -> None:
    """Fork ``processes`` children that each count a day's worth of attempts, like prefork pool processes."""
    children = []
    for _ in range(processes):
        pid = os.fork()
        if pid == 0:
            metrics = Metrics()
            row = type("Row", (), {"channel": "Webhook"})
            for n in range(200):
                metrics.attempt(row, Outcome.SENT if n % 4 else Outcome.RETRY, 0.05 * (n % 7))
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--processes", type=int, default=4, help="forked processes whose counters are merged")
    args = parser.parse_args()
    db = ScratchDatabase()
    url = db.url
    try:
        db.create()
        started = time.perf_counter()
        load_rows(url, args.rows)
        print(f"loaded {args.rows} rows in {time.perf_counter() - started:.1f} s")
        with tempfile.TemporaryDirectory() as metrics_dir:
            settings = load_settings({"CERTCTL_DATABASE_URL": url, "CERTCTL_BROKER_URL": REDIS_URL,
                                      "CERTCTL_AUTH_TYPE": "none", "CERTCTL_METRICS_DIR": metrics_dir})
            app = create_app(settings)  # this process becomes a multiprocess-mode API process
            write_pool_counters(args.processes)
            engine = app.extensions["certctl"].sessions.engine
            statements = []
            event.listen(engine, "before_cursor_execute", lambda *a: statements.append(a[2]))
            client = app.test_client()
            warm = client.get("/metrics")
            if warm.status_code != 200 or b"certctl_notifications{" not in warm.data:
                raise SystemExit(f"scrape failed: {warm.status_code} {warm.data[:500]!r}")
            statements.clear()
            timings = []
            for _ in range(args.scrapes):
                began = time.perf_counter()
                response = client.get("/metrics")
                timings.append((time.perf_counter() - began) * 1000)
                assert response.status_code == 200
            per_scrape = len(statements) / args.scrapes
    finally:
        db.drop()
    timings.sort()
    p50 = statistics.median(timings)
    p95 = timings[min(len(timings) - 1, round(0.95 * len(timings)) - 1)]
    print(f"{args.scrapes} scrapes of /metrics, {args.rows} rows, {args.processes} counter processes: "
          f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {timings[-1]:.1f} ms; {per_scrape:g} SQL statement(s) per "
          f"scrape; target < {TARGET_MS:g} ms: {'met' if p95 < TARGET_MS else 'MISSED'}")
    print(json.dumps({"rows": args.rows, "scrapes": args.scrapes, "p50_ms": round(p50, 2), "p95_ms": round(p95, 2),
                      "max_ms": round(timings[-1], 2), "statements_per_scrape": per_scrape}))
    return 0 if p95 < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
