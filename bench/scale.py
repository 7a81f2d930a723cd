#!/usr/bin/env python
"""How each read of the API and the console, and one sweep tick, grow with notification_events.

    .venv/bin/python -m bench.scale [--sizes 10000,1000000,10000000] [--runs 7] [--keep]

For each size (in order) it empties and fills its own database ``certctl_bench_scale`` (dropped at the
end unless ``--keep``) with `bench.seed`: 90 % sent, 5 % read, 4 % dead, 0.8 % failed, 0.2 % pending,
created over 30 days in insertion order (as a table that only grew), one attempt per attempted row,
``last_error`` on failed and dead rows (a fifth "HTTP 503 … from https://…"), 6 channels; indexes are
dropped for the fill and made again, exactly the same, then ``VACUUM (ANALYZE)`` and the triggers'
count deltas folded (as beat does). The API runs under gunicorn (2 workers, admin key, multiprocess
metrics, broker URL on a free Redis db, claimed with the test suite's owner key; the keys the run leaves
there are deleted). After ``--warmup`` rounds, ``--runs`` rounds each make every request once (so a
disturbance hits all of them alike); it prints the medians, in ms, with their growth from the first
size to the last, and the ``total``/``total_exact`` each list returned.

The sweep is ``certctl-notify sweep`` (one tick) timed as a process, with the API's environment and
``CERTCTL_SWEEP_GRACE`` longer than the run: the rows are a snapshot that no worker moves on, so with
the default grace its pending rows would turn "lost" while the run goes on and each tick would publish
a different batch; this way every tick walks the same indexes and finds nothing due.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import seed  # noqa: E402
from bench.common import BenchError, ScratchDatabase, ScratchRedisDb, run_cleanup, run_guarded  # noqa: E402

DB_NAME = "certctl_bench_scale"
MIX = seed.Mix(sent=0.90, read=0.05, dead=0.04, failed=0.008, pending=0.002)
AUDIT_ROWS = 1_000
#: A request slower than this (median, ms) at any size is marked.
SLOW_MS = 50.0
#: A request whose median grows more than this from the first size to the last is marked.
GROWTH_LIMIT = 1.5
LIST = "/api/v1/notifications"


def short(n: int) -> str:
    """10000 -> 10k, 1000000 -> 1M."""
    for unit, name in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{name}"
    return f"{n:,}"


class Bench:
    def __init__(self, args):
        self.args = args
        self.failed = False
        self.deadline = time.monotonic() + args.max_seconds
        self.tmp = Path(tempfile.mkdtemp(prefix="certctl-bench-scale-"))
        self.api_key = f"bench-{uuid.uuid4().hex}"
        self.engine = self.server = None
        self.db = ScratchDatabase(DB_NAME)
        self.redis_db = ScratchRedisDb(Path(__file__).stem, seconds=self.args.max_seconds + 120)
        self.env: dict[str, str] = {}

    # -- setup and clean-up --

    def create_database(self) -> None:
        from sqlalchemy import create_engine

        self.db.create()
        self.engine = create_engine(self.db.url, isolation_level="AUTOCOMMIT")

    def start_api(self) -> None:
        from tests.support.api_server import GunicornProcess

        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_") and k != "GUNICORN_CMD_ARGS"}
        env.update({"CERTCTL_DATABASE_URL": self.db.url, "CERTCTL_BROKER_URL": self.redis_db.url,
                    "CERTCTL_API_KEYS": f"bench:{self.api_key}:admin", "CERTCTL_LOG_LEVEL": "WARNING",
                    "CERTCTL_DATA_DIR": str(self.tmp / "data"), "CERTCTL_METRICS_DIR": str(self.tmp / "metrics"),
                    # longer than the run: see the module docstring
                    "CERTCTL_SWEEP_GRACE": f"{self.args.max_seconds + 3600}s",
                    "PYTHONDONTWRITEBYTECODE": "1"})
        self.env = env
        self.server = GunicornProcess(env, self.tmp / "gunicorn.log", workers=2)
        self.server.env = env  # exactly this environment: no CERTCTL_* of the caller leaks in
        self.server.start(timeout=60)

    def logs(self):
        return [("gunicorn log", self.server.log()[-4000:])] if self.server else []

    def cleanup(self) -> None:
        run_cleanup([
            ("stop gunicorn", lambda: self.server and self.server.stop()),
            ("release redis db", self.redis_db.release),
            ("dispose engine", lambda: self.engine and self.engine.dispose()),
            ("drop database", self.drop_database),
        ])
        if self.failed:
            print(f"logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def drop_database(self) -> None:
        self.db.drop(keep=self.args.keep and not self.failed)

    def remaining(self) -> float:
        """Seconds left of ``--max-seconds`` (a statement or child process must not outlive the run)."""
        left = self.deadline - time.monotonic()
        if left <= 1:
            raise BenchError(f"the run exceeded --max-seconds={self.args.max_seconds}")
        return left

    # -- filling --

    def fill(self, rows: int) -> dict:
        """Fill ``rows`` notifications, fold the count deltas; returns the fill's figures."""
        from certctl_notify import store

        raw = self.engine.raw_connection()
        try:
            raw.autocommit = True
            with raw.cursor() as cur:
                # the SQL keeps running past SIGALRM, so the statements themselves stop at the deadline
                cur.execute(f"SET statement_timeout = {int(self.remaining() * 1000)}")
                cur.execute("SET maintenance_work_mem = '1GB'")  # this session's index builds sort in memory
                out = seed.fill(cur, rows, mix=MIX, tag=f"{rows}:", attempts="last each", audit_rows=AUDIT_ROWS,
                                ordered=True, rebuild_indexes=True)
        finally:
            raw.close()
        with self.engine.begin() as conn:
            store.fold_deltas(conn)
        return out

    def targets(self) -> dict:
        """The row at the median ``created_at`` (its keyset cursor) and a dead row with an attempt near it."""
        from sqlalchemy import select

        from certctl_notify.model import attempts, events
        from certctl_notify.store.listing import encode_cursor

        with self.engine.connect() as conn:
            n = conn.exec_driver_sql("SELECT count(*) FROM notification_events").scalar_one()
            middle = conn.execute(select(events.c.id, events.c.created_at)
                                  .order_by(events.c.created_at, events.c.id).offset(n // 2).limit(1)).one()
            dead = conn.execute(select(events.c.id).where(
                events.c.status == "dead", events.c.created_at <= middle.created_at,
                select(attempts.c.id).where(attempts.c.notification_id == events.c.id).exists(),
            ).order_by(events.c.created_at.desc()).limit(1)).scalar_one()
        return {"middle": middle, "cursor": encode_cursor(middle), "dead_id": dead}

    # -- measuring --

    def timed_requests(self, client, targets: dict) -> list[tuple[str, str | None]]:
        """(label, path) of every timed request; None is the sweep. Follows the keyset cursor once."""
        first = self.get(client, f"{LIST}?per_page=50&cursor={targets['cursor']}").json()
        head = first["data"][0] if first["data"] else None
        if head is None or head["id"] == targets["middle"].id or not first["next_cursor"]:
            raise BenchError(f"the cursor of the middle row did not page on from it: {str(first)[:300]}")
        return [
            ("GET /api/v1/notifications?per_page=50", f"{LIST}?per_page=50"),
            ("  ?channel=Slack", f"{LIST}?channel=Slack&per_page=50"),
            ("  ?q=503", f"{LIST}?q=503&per_page=50"),
            ("  ?status=dead", f"{LIST}?status=dead&per_page=50"),
            ("  deep page: ?cursor= (keyset, mid-table)", f"{LIST}?per_page=50&cursor={first['next_cursor']}"),
            ("  deep page: ?page=10000 (offset)", f"{LIST}?page=10000&per_page=50"),
            ("GET /api/v1/notifications/{id} (dead)", f"{LIST}/{targets['dead_id']}"),
            ("GET /api/v1/stats/summary", "/api/v1/stats/summary"),
            ("GET /metrics", "/metrics"),
            ("console: Dead letter tab", "/console/notifications?tab=dead"),
            ("console: overview", "/console/"),
            ("certctl-notify sweep (process wall)", None),
        ]

    def get(self, client, path: str):
        response = client.get(path, timeout=min(120.0, self.remaining()))
        if response.status_code != 200:
            raise BenchError(f"GET {path}: {response.status_code} {response.text[:300]}")
        return response

    def sweep(self) -> str:
        """One ``certctl-notify sweep``; returns its output."""
        done = subprocess.run([str(Path(sys.executable).parent / "certctl-notify"), "sweep"], env=self.env,
                              capture_output=True, text=True, timeout=min(300.0, self.remaining()), cwd=ROOT)
        if done.returncode != 0:
            raise BenchError(f"certctl-notify sweep exited {done.returncode}: {done.stdout}{done.stderr}")
        return done.stdout.strip()

    def measure(self, targets: dict) -> dict:
        """Median ms per request over ``--runs`` rounds, and what each list and the sweep answered."""
        import httpx

        times: dict[str, list[float]] = {}
        answers: dict[str, str] = {}
        with httpx.Client(base_url=self.server.url, headers={"Authorization": f"Bearer {self.api_key}"}) as client:
            todo = self.timed_requests(client, targets)
            for round_ in range(self.args.warmup + self.args.runs):
                for label, path in todo:
                    started = time.perf_counter()
                    if path is None:
                        answer = self.sweep()
                    else:
                        response = self.get(client, path)
                    elapsed = 1000 * (time.perf_counter() - started)
                    if round_ < self.args.warmup:
                        continue
                    times.setdefault(label, []).append(elapsed)
                    if path is None:
                        answers[label] = answer
                    elif path.startswith(f"{LIST}?"):
                        body = response.json()
                        answers[label] = (f"total {body['total']:,}, total_exact {str(body['total_exact']).lower()}"
                                          f", {len(body['data'])} rows")
        return {"ms": {label: statistics.median(v) for label, v in times.items()}, "answers": answers,
                "order": [label for label, _ in todo]}

    # -- the run --

    def run(self) -> None:
        from importlib.metadata import version

        started = time.monotonic()
        self.redis_db.claim()
        self.create_database()
        with self.db.admin.connect() as conn:
            pg = conn.exec_driver_sql("SHOW server_version").scalar()
        print(f"environment: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; PostgreSQL {pg}; "
              f"gunicorn {version('gunicorn')} --workers 2 (sync); {self.args.warmup} warm-up + "
              f"{self.args.runs} timed rounds, medians in ms", flush=True)
        results = {}
        for size in self.args.sizes:
            fill = self.fill(size)
            s = fill["statuses"]
            print(f"\n{size:>11,} rows: inserted in {fill['insert_s']:.1f} s + indexes {fill['index_s']:.1f} s + "
                  f"VACUUM (ANALYZE) {fill['vacuum_s']:.1f} s: "
                  + ", ".join(f"{k} {s.get(k, 0):,}" for k in ("sent", "read", "dead", "failed", "pending"))
                  + f"; {fill['attempts']:,} attempts; notification_events {fill['bytes'] / 2**20:,.0f} MiB "
                  f"with indexes", flush=True)
            if self.server is None:
                self.start_api()
            load = os.getloadavg()[0]
            results[size] = self.measure(self.targets())
            sweep = results[size]["answers"]["certctl-notify sweep (process wall)"]
            print(f"  measured (load average {load:.2f} before); sweep said: {sweep}", flush=True)
        self.print_table(results)
        print(f"\nbench took {time.monotonic() - started:.0f} s", flush=True)

    def print_table(self, results: dict) -> None:
        sizes = self.args.sizes
        first, last = sizes[0], sizes[-1]
        order = results[first]["order"]
        width = max(len(label) for label in order) + 1
        growth = f"growth ({short(last)}/{short(first)})"
        print(f"\n{'request':<{width}}" + "".join(f"{short(n):>10}" for n in sizes) + f"  {growth}")
        for label in order:
            cells = []
            for n in sizes:
                ms = results[n]["ms"][label]
                cells.append(f"{ms:8.1f}{' *' if ms > SLOW_MS else '  '}")
            ratio = results[last]["ms"][label] / results[first]["ms"][label]
            print(f"{label:<{width}}" + "".join(cells) + f"  {ratio:6.2f}×{' !' if ratio > GROWTH_LIMIT else ''}")
        print(f"(* median over {SLOW_MS:.0f} ms; ! grew more than {GROWTH_LIMIT}× from {short(first)} to "
              f"{short(last)} rows)")
        print("\nwhat each list returned")
        for label in order:
            if label in results[first]["answers"] and not label.startswith("certctl-notify"):
                print(f"{label.strip()}")
                for n in sizes:
                    print(f"  {short(n):>5}: {results[n]['answers'][label]}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,1000000,10000000",
                        help="comma-separated row counts, filled and measured in this order")
    parser.add_argument("--runs", type=int, default=7, help="timed rounds (every request once per round)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before them")
    parser.add_argument("--keep", action="store_true", help=f"keep the database {DB_NAME} at the end")
    parser.add_argument("--max-seconds", type=int, default=3600, help="hard limit for the whole run")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(x.replace("_", "")) for x in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes must be comma-separated integers, not {args.sizes!r}")
    if len(args.sizes) < 2 or min(args.sizes) < 1_000 or args.runs < 1 or args.warmup < 0:
        parser.error("--sizes needs two sizes or more of 1,000 rows or more, --runs at least 1, --warmup at least 0")
    return run_guarded(Bench(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
