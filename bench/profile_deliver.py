#!/usr/bin/env python
"""Where one delivery's time goes: the steps of the ``deliver`` task (claim, send, record) timed
in-process, on the same services as ``bench/throughput.py`` (fresh PostgreSQL database, local receiver).

    .venv/bin/python bench/profile_deliver.py --count 1000

No Celery here: it calls ``workers.runtime.Runtime(settings).delivery`` exactly as the task body
does, counts SQL statements, transactions, pool check-outs and pre-pings per delivery, prints
wall and CPU time per step, then a cProfile of the same loop summed by package.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import ScratchDatabase  # noqa: E402
from bench.throughput import WEBHOOK_SECRET, Receiver, alert_fields  # noqa: E402


class NoPublish:
    """Intake without a broker: rows are committed as pending and delivered by this script."""

    def dispatch(self, notification_id: str, attempt: int, dispatched_at=None) -> None:
        pass


def instrument(*engines) -> Counter:
    """Count statements, commits, rollbacks, pool check-outs and pings on ``engines``."""
    from sqlalchemy import event

    counts: Counter = Counter()
    for engine in engines:
        event.listen(engine, "before_cursor_execute", lambda *a, **k: counts.update(["statements"]))
        event.listen(engine, "commit", lambda *a: counts.update(["commits"]))
        event.listen(engine, "rollback", lambda *a: counts.update(["rollbacks"]))
        event.listen(engine.pool, "checkout", lambda *a: counts.update(["checkouts"]))
        ping = engine.dialect.do_ping

        def counted_ping(dbapi_connection, ping=ping):
            counts.update(["pings"])
            return ping(dbapi_connection)

        engine.dialect.do_ping = counted_ping
    return counts


def pg_backend_cpu(dbname: str) -> float:
    """CPU seconds so far of the PostgreSQL backends serving ``dbname`` (this script's connections)."""
    import psutil

    total = 0.0
    for p in psutil.process_iter(["name", "cmdline"]):
        cmdline = " ".join(p.info["cmdline"] or []) + " "
        if p.info["name"] in ("postgres", "postmaster") and f" {dbname} " in cmdline:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
    return total


DBNAME = ""


def measure(delivery, ids, counts: Counter, label: str) -> dict:
    from certctl_notify.delivery import Attempt

    pg_before = pg_backend_cpu(DBNAME)
    wall = defaultdict(list)
    cpu = defaultdict(float)
    counts.clear()
    for notification_id in ids:
        attempt = Attempt(notification_id, 1, uuid.uuid4().hex, "profile")
        c0, t0 = time.process_time(), time.perf_counter()
        row = delivery.claim(attempt)
        c1, t1 = time.process_time(), time.perf_counter()
        sent = delivery.send(row, attempt)
        c2, t2 = time.process_time(), time.perf_counter()
        assert delivery.record_sent(row, attempt, sent)
        c3, t3 = time.process_time(), time.perf_counter()
        for step, (a, b, ca, cb) in {"claim": (t0, t1, c0, c1), "send": (t1, t2, c1, c2),
                                     "record": (t2, t3, c2, c3)}.items():
            wall[step].append((b - a) * 1000)
            cpu[step] += (cb - ca) * 1000
    n = len(ids)
    print(f"\n{label}: {n} deliveries, one at a time")
    print(f"  {'step':<8}{'wall p50':>10}{'wall mean':>11}{'CPU mean':>10}   (ms)")
    for step in ("claim", "send", "record"):
        print(f"  {step:<8}{statistics.median(wall[step]):>10.2f}{statistics.fmean(wall[step]):>11.2f}"
              f"{cpu[step] / n:>10.2f}")
    total_wall = sum(statistics.fmean(v) for v in wall.values())
    total_cpu = sum(cpu.values()) / n
    print(f"  {'total':<8}{'':>10}{total_wall:>11.2f}{total_cpu:>10.2f}   "
          f"→ {1000 / total_wall:,.0f}/s per process if nothing else ran")
    pg_ms = 1000 * (pg_backend_cpu(DBNAME) - pg_before) / n
    print(f"  PostgreSQL backend CPU: {pg_ms:.2f} ms per delivery")
    print("  per delivery: " + ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(counts.items())))
    return {"wall_ms": total_wall, "cpu_ms": total_cpu, **{k: v / n for k, v in counts.items()}}


def by_package(profile: cProfile.Profile, n: int) -> None:
    stats = pstats.Stats(profile)
    totals: Counter = Counter()
    for (filename, _line, _func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        path = filename.replace("\\", "/")
        if "site-packages/" in path:
            package = path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
        elif "/work/main/" in path:
            package = "/".join(path.split("/work/main/", 1)[1].split("/")[:2]).removesuffix(".py")
        elif path.startswith("~") or path.startswith("<"):
            package = "builtins (C: sockets, json, hashing …)"
        else:
            package = "stdlib: " + Path(path).stem
        totals[package] += tottime
    grand = sum(totals.values())
    print("\ncProfile, own time summed by package (ms per delivery; profiler overhead inflates all; "
          f"total {1000 * grand / n:.2f}):")
    for package, seconds in totals.most_common(18):
        print(f"  {1000 * seconds / n:7.3f}  {seconds / grand:5.1%}  {package}")
    print("\ncProfile, top functions by cumulative time:")
    stats.sort_stats("cumulative").print_stats(28)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000)
    args = parser.parse_args(argv)

    from certctl_notify.environment import load_settings
    from certctl_notify.intake import enqueue_alert
    from workers.runtime import Runtime

    global DBNAME
    db = ScratchDatabase()
    DBNAME = db.name
    url = db.url
    receiver = None
    engines = []
    try:
        db.create()
        receiver = Receiver()
        settings = load_settings({
            "CERTCTL_DATABASE_URL": url, "CERTCTL_BROKER_URL": "redis://127.0.0.1:6379/12",
            "CERTCTL_WEBHOOK_URL": receiver.url, "CERTCTL_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "CERTCTL_OUTBOUND_ALLOW": "127.0.0.1/32", "CERTCTL_LOG_LEVEL": "WARNING",
        })
        runtime = Runtime(settings)
        delivery = runtime.delivery
        engines.append(runtime.sessions)
        counts = instrument(runtime.sessions.engine)

        runs = 2
        total = args.count * runs + 20
        t0 = time.perf_counter()
        ids = []
        for i in range(total):
            ids += [r.row.id for r in enqueue_alert(runtime.sessions, NoPublish(), alert_fields("bench", i))]
        intake = time.perf_counter() - t0
        print(f"intake without publishing: {1000 * intake / total:.2f} ms per enqueue_alert "
              f"({total / intake:,.0f}/s, one process)")
        counts.clear()
        enqueue_alert(runtime.sessions, NoPublish(), alert_fields("probe", 0))
        print("  per enqueue_alert: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))

        measure(delivery, ids[:20], counts, "warm-up")
        chunks = [ids[20 + k * args.count: 20 + (k + 1) * args.count] for k in range(runs)]
        measure(delivery, chunks[0], counts, "production settings")

        pool = delivery.channels["Webhook"]._http._client._transport._pool
        print(f"\nhttpx: {len(pool.connections)} pooled connection(s) after all deliveries "
              "(the client is reused)")
        profile = cProfile.Profile()
        profile.enable()
        measure(delivery, chunks[-1], counts, "under cProfile")
        profile.disable()
        by_package(profile, len(chunks[-1]))
    finally:
        if receiver is not None:
            receiver.stop()
        for engine in engines:
            engine.dispose()
        db.drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
