#!/usr/bin/env python
"""How the console's pages hold up as notification_events grows: first paint, server time, page weight.

    .venv/bin/python -m bench.console [--rows 1000000] [--runs 15] [--keep]

Fills the database ``certctl_bench_console`` (its own; dropped at the end unless ``--keep``) in SQL with
``generate_series``: a 30-day mix (~90 % sent, 3 % read, 4 % dead, 2 % failed, 1 % pending, the pending
rows from the last 15 minutes; 6 channels, 7 types, certificate ids that repeat, ``last_error`` on
failed and dead rows), the attempts of every row created in the last 24 h (~48k at 1M rows: the
overview's chart) and 1,000 audit entries, then ``VACUUM (ANALYZE)`` (the state autovacuum keeps a
long-lived table in: all-visible pages, fresh statistics). It does so at 10,000 rows, then truncates and
refills at ``--rows``.

For each size the API runs under gunicorn (2 workers, admin key, broker on a free Redis db, claimed with the
test suite's owner key; only the overview's worker-health fragment and the Workers page talk to it:
inspect broadcasts that no worker answers), and Debian's chromium, signed in once through the form,
loads each view in a fresh page of the signed-in context (``--warmup`` untimed loads, then ``--runs``):
first-contentful-paint, the navigation's responseStart, and gunicorn's own time for that request (its
access log). The same pages fetched with httpx and a bearer key, and
``GET /api/v1/notifications?status=dead&per_page=50``, give the server time with no browser running. The
SQL statements behind each view are then timed in-process (median of 5), and the three slowest at the
larger size are shown with ``EXPLAIN (ANALYZE, BUFFERS)``. Page weights are the uncompressed bodies of
the document, its scripts and stylesheets (plus the fragments its script fetches) on a first visit.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import seed  # noqa: E402
from bench.common import (  # noqa: E402
    BenchError,
    ScratchDatabase,
    ScratchRedisDb,
    cpu_by_pid,
    cpu_used,
    process_tree,
    run_cleanup,
    run_guarded,
    service_processes,
    system_busy,
)

DB_NAME = "certctl_bench_console"
SMALL_ROWS = 10_000
AUDIT_ROWS = 1_000
DEAD_TAB = "/console/notifications?tab=dead"
#: (label, path) of the views timed at each size; the sign-in page (no query, 1 kB of HTML, the same
#: CSS and JS) is the browser's floor.
TIMED = (("dead tab", DEAD_TAB), ("all tab", "/console/notifications"), ("overview", "/console/"),
         ("sign-in (floor)", "/console/sign-in"))
API_DEAD = "/api/v1/notifications?status=dead&per_page=50"

#: The status mix of the fills (pending rows from the last 15 minutes).
MIX = seed.Mix(sent=0.90, read=0.03, dead=0.04, failed=0.02, pending=0.01)


def track_inflight(page) -> set:
    """The page's requests not yet finished (a live set)."""
    inflight: set = set()
    page.on("request", lambda request: inflight.add(request))
    page.on("requestfinished", lambda request: inflight.discard(request))
    page.on("requestfailed", lambda request: inflight.discard(request))
    return inflight


def record_responses(page) -> list:
    """Every response the page receives from now on (a live list)."""
    responses: list = []
    page.on("response", lambda response: responses.append(response))
    return responses


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: with 15 values p95 is the largest."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def med_p95(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f} {percentile(values, 95):7.1f}"


class Bench:
    def __init__(self, args):
        self.args = args
        self.failed = False
        self.tmp = Path(tempfile.mkdtemp(prefix="certctl-bench-console-"))
        self.api_key = f"bench-{uuid.uuid4().hex}"
        self.engine = self.server = None
        self.db = ScratchDatabase(DB_NAME)
        self.redis_db = ScratchRedisDb(Path(__file__).stem, seconds=self.args.max_seconds + 120)
        self.playwright = self.browser = self.context = None
        self.access_log = self.tmp / "access.log"

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
                    "CERTCTL_DATA_DIR": str(self.tmp / "data"), "PYTHONDONTWRITEBYTECODE": "1",
                    # gunicorn's own time per request (%(D)s, µs), so the browser's navigations get a server time too
                    "GUNICORN_CMD_ARGS": f"--access-logfile {self.access_log} --access-logformat '%(r)s|%(D)s|%(a)s'"})
        self.server = GunicornProcess(env, self.tmp / "gunicorn.log", workers=2)
        self.server.env = env  # exactly this environment: no CERTCTL_* of the caller leaks in
        self.server.start(timeout=60)

    def start_browser(self) -> None:
        from playwright.sync_api import sync_playwright

        from tests.support.browser import DEFAULT_TIMEOUT_MS, VIEWPORT, launch

        self.playwright = sync_playwright().start()
        self.browser = launch(self.playwright)
        self.context = self.browser.new_context(viewport=VIEWPORT)
        self.context.set_default_timeout(DEFAULT_TIMEOUT_MS)
        page = self.context.new_page()
        page.goto(f"{self.server.url}/console/sign-in")
        page.fill("#key", self.api_key)
        with page.expect_navigation():
            page.click("form button[type=submit]")
        if not page.url.rstrip("/").endswith("/console"):
            raise BenchError(f"sign-in did not reach the overview (at {page.url})")
        page.close()

    def logs(self):
        return [("gunicorn log", self.server.log()[-4000:])] if self.server else []

    def cleanup(self) -> None:
        steps = [
            ("close browser", lambda: self.browser and self.browser.close()),
            ("stop playwright", lambda: self.playwright and self.playwright.stop()),
            ("stop gunicorn", lambda: self.server and self.server.stop()),
            ("release redis db", self.redis_db.release),
            ("dispose engine", lambda: self.engine and self.engine.dispose()),
            ("drop database", self.drop_database),
        ]
        run_cleanup(steps)
        if self.failed:
            print(f"logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def drop_database(self) -> None:
        self.db.drop(keep=self.args.keep and not self.failed)

    def fill(self, rows: int) -> dict:
        """Empty the tables and fill them with ``rows`` notifications; returns counts and timings."""
        raw = self.engine.raw_connection()
        try:
            raw.autocommit = True
            with raw.cursor() as cur:
                timings = seed.fill(cur, rows, mix=MIX, tag=f"{rows}:", attempts="last day", audit_rows=AUDIT_ROWS)
                cur.execute("SELECT e.id FROM notification_events e WHERE e.status = 'dead' AND EXISTS "
                            "(SELECT 1 FROM notification_attempts a WHERE a.notification_id = e.id) "
                            "ORDER BY e.created_at DESC LIMIT 1")
                found = cur.fetchone()
                timings["dead_id"] = found[0] if found else None
        finally:
            raw.close()
        return timings

    # -- measuring --

    def cpu_groups(self) -> dict[str, list]:
        return {"bench": process_tree(_Self()), "gunicorn": process_tree(self.server.proc),
                "postgres": service_processes(DB_NAME)["bench db"]}

    def browser_load(self, path: str) -> dict:
        """One navigation in a fresh page; waits for the fragments its script fetches before closing."""
        page = self.context.new_page()
        inflight = track_inflight(page)
        try:
            response = page.goto(f"{self.server.url}{path}", wait_until="load")
            if response is None or response.status != 200 or ("/sign-in" in page.url) != ("/sign-in" in path):
                raise BenchError(f"{path}: {response and response.status} at {page.url}")
            deadline = time.monotonic() + 10
            while (fcp := page.evaluate("() => performance.getEntriesByName('first-contentful-paint')"
                                        ".map((e) => e.startTime)")) == []:
                if time.monotonic() > deadline:
                    raise BenchError(f"{path}: no first-contentful-paint entry within 10 s")
                page.wait_for_timeout(20)
            ttfb = page.evaluate("() => performance.getEntriesByType('navigation')[0].responseStart")
            deadline = time.monotonic() + 15
            while inflight and time.monotonic() < deadline:
                page.wait_for_timeout(20)
            # transferSize 0: served from the cache unasked; below the body's size: revalidated (a 304)
            static = page.evaluate("() => performance.getEntriesByType('resource')"
                                   ".filter((e) => ['link', 'script'].includes(e.initiatorType))"
                                   ".map((e) => [e.transferSize, e.encodedBodySize])")
            return {"fcp": fcp[0], "ttfb": ttfb, "static": len(static),
                    "static_304": sum(1 for sent, body in static if 0 < sent < body)}
        finally:
            page.close()

    def http_get(self, client, path: str) -> float:
        started = time.perf_counter()
        response = client.get(path)
        elapsed = 1000 * (time.perf_counter() - started)
        if response.status_code != 200:
            raise BenchError(f"GET {path}: {response.status_code} {response.text[:300]}")
        return elapsed

    def measure_size(self, rows: int) -> dict:
        import httpx

        out: dict = {}
        before_cpu, before_busy, wall = cpu_by_pid(self.cpu_groups()), system_busy(), time.monotonic()
        headers = {"Authorization": f"Bearer {self.api_key}"}
        with httpx.Client(base_url=self.server.url, headers=headers, timeout=30) as client:
            for _ in range(4):  # both gunicorn workers: templates compiled, pool connections open
                for _, path in TIMED:
                    self.http_get(client, path)
            for label, path in TIMED:
                for _ in range(self.args.warmup):
                    self.browser_load(path)
                offset = self.access_log.stat().st_size
                loads = [self.browser_load(path) for _ in range(self.args.runs)]
                served = self.served_ms(offset, path)
                for _ in range(self.args.warmup):
                    self.http_get(client, path)
                http = [self.http_get(client, path) for _ in range(self.args.runs)]
                out[label] = {"fcp": [x["fcp"] for x in loads], "ttfb": [x["ttfb"] for x in loads], "http": http,
                              "served": served,
                              "static": sum(x["static"] for x in loads),
                              "static_304": sum(x["static_304"] for x in loads)}
            for _ in range(self.args.warmup):
                self.http_get(client, API_DEAD)
            out["API dead list"] = {"http": [self.http_get(client, API_DEAD) for _ in range(self.args.runs)]}
        wall = time.monotonic() - wall
        ours = sum(cpu_used(before_cpu, cpu_by_pid(self.cpu_groups())).values())
        out["_elsewhere_cores"] = max(0.0, (system_busy() - before_busy - ours) / wall)
        out["_statements"] = self.time_statements()
        return out

    def served_ms(self, offset: int, path: str) -> list[float]:
        """gunicorn's time for each of chromium's requests of ``path`` logged after ``offset``."""
        with self.access_log.open() as log:
            log.seek(offset)
            lines = [line.rstrip("\n").rsplit("|", 2) for line in log]
        served = [int(us) / 1000 for request, us, agent in lines
                  if request.split(" ")[1:2] == [path] and "HeadlessChrome" in agent]
        if len(served) != self.args.runs:
            raise BenchError(f"{path}: {len(served)} browser requests in gunicorn's access log, not {self.args.runs}")
        return served

    def time_statements(self) -> list[dict]:
        """Each SQL statement the timed views run (captured from the store functions the views call):
        median of 5 executions, and its EXPLAIN (ANALYZE, BUFFERS)."""
        from sqlalchemy import event

        from api.console import filters
        from certctl_notify import store
        from certctl_notify.db import make_sessions
        from certctl_notify.model import Status, utcnow
        from certctl_notify.store.listing import NotificationFilter

        now = utcnow()
        dead, every = filters.from_args({"tab": "dead"}), filters.from_args({"tab": "all"})
        dead_only = (Status.DEAD.value,)
        calls = [  # (view, store function, call) as pages.py and notifications.py make them
            ("dead tab", "counts_by_status", lambda s: store.counts_by_status(s, dead.store_filter(as_of=None))),
            ("dead tab", "list_notifications", lambda s: store.list_notifications(
                s, dead.store_filter(as_of=now), page=1, per_page=filters.PER_PAGE)),
            ("all tab", "counts_by_status", lambda s: store.counts_by_status(s, every.store_filter(as_of=None))),
            ("all tab", "list_notifications", lambda s: store.list_notifications(
                s, every.store_filter(as_of=now), page=1, per_page=filters.PER_PAGE)),
            ("overview", "summary", lambda s: store.summary(s, now=now)),
            ("overview", "hourly_outcomes", lambda s: store.hourly_outcomes(s, now=now)),
            ("overview", "list_notifications", lambda s: store.list_notifications(
                s, NotificationFilter(statuses=dead_only), page=1, per_page=5)),
            ("API dead list", "list_notifications", lambda s: store.list_notifications(
                s, NotificationFilter(statuses=dead_only, as_of=now), page=1, per_page=50)),
        ]
        sessions = make_sessions(self.db.url)
        captured: list[tuple[str, str, str, object]] = []
        where = {"view": "", "fn": ""}
        event.listen(sessions.engine, "before_cursor_execute", lambda conn, cur, stmt, params, ctx, many:
                     captured.append((where["view"], where["fn"], stmt, params)))
        try:
            with sessions.begin() as s:
                for view, fn, call in calls:
                    where.update(view=view, fn=fn)
                    first = len(captured)
                    call(s)
                    if fn == "list_notifications":  # its two statements: the true total, then the page
                        for i, part in ((first, "total"), (first + 1, "page")):
                            captured[i] = (view, f"{fn}: {part}", *captured[i][2:])
        finally:
            sessions.dispose()
        results = []
        raw = self.engine.raw_connection()
        try:
            with raw.cursor() as cur:
                for view, fn, stmt, params in captured:
                    times = []
                    for _ in range(5):
                        started = time.perf_counter()
                        cur.execute(stmt, params)
                        cur.fetchall()
                        times.append(1000 * (time.perf_counter() - started))
                    cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + stmt, params)
                    plan = "\n".join(r[0] for r in cur.fetchall())
                    results.append({"view": view, "fn": fn, "sql": " ".join(stmt.split()),
                                    "ms": statistics.median(times),
                                    "plan": plan})
            raw.rollback()
        finally:
            raw.close()
        return results

    def page_weights(self, dead_id: str) -> list[tuple[str, dict]]:
        """Uncompressed bytes per resource type on a first visit (empty cache) of each view."""
        views = [("overview", "/console/"), ("notifications (all)", "/console/notifications"),
                 ("dead tab", DEAD_TAB), ("detail (dead row)", f"/console/notifications/{dead_id}"),
                 ("workers", "/console/workers"), ("audit", "/console/audit"), ("sign-in", "/console/sign-in")]
        state = self.context.storage_state()
        weights = []
        for label, path in views:
            signed_out = label == "sign-in"
            context = self.browser.new_context(storage_state=None if signed_out else state)
            try:
                page = context.new_page()
                responses, inflight = record_responses(page), track_inflight(page)
                page.goto(f"{self.server.url}{path}", wait_until="load")
                deadline = time.monotonic() + 15
                while inflight and time.monotonic() < deadline:
                    page.wait_for_timeout(20)
                sizes = {"html": 0, "js": 0, "css": 0, "fragments": 0, "requests": 0}
                kinds = {"document": "html", "script": "js", "stylesheet": "css", "fetch": "fragments",
                         "xhr": "fragments"}
                for response in responses:
                    if 300 <= response.status < 400:
                        continue
                    kind = kinds.get(response.request.resource_type)
                    if kind is None:
                        raise BenchError(f"{path}: unexpected {response.request.resource_type} {response.url}")
                    sizes[kind] += len(response.body())
                    sizes["requests"] += 1
                weights.append((label, sizes))
            finally:
                context.close()
        return weights

    # -- the run --

    def run(self) -> None:
        from importlib.metadata import version

        started = time.monotonic()
        self.redis_db.claim()
        self.create_database()
        with self.db.admin.connect() as conn:
            pg = conn.exec_driver_sql("SHOW server_version").scalar()
        print(f"environment: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; PostgreSQL {pg}, "
              f"chromium {self._chromium_version()}, playwright {version('playwright')}, gunicorn "
              f"{version('gunicorn')} --workers 2 (sync); {self.args.warmup} warm-up + {self.args.runs} timed "
              f"loads per view and size; times in ms", flush=True)
        results, fills = {}, {}
        for size in (SMALL_ROWS, self.args.rows):
            fill = fills[size] = self.fill(size)
            s = fill["statuses"]
            print(f"\nfilled {size:,} rows in {fill['insert_s']:.1f} s + VACUUM (ANALYZE) {fill['vacuum_s']:.1f} s: "
                  + ", ".join(f"{k} {s.get(k, 0):,}" for k in ("sent", "read", "dead", "failed", "pending"))
                  + f"; {fill['attempts']:,} attempts (last 24 h), {AUDIT_ROWS:,} audit entries; "
                  f"notification_events {fill['bytes'] / 2**20:,.0f} MiB with indexes", flush=True)
            if self.server is None:
                self.start_api()
                self.start_browser()
            results[size] = self.measure_size(size)
            self.print_size(size, results[size])
        weights = self.page_weights(fills[self.args.rows]["dead_id"])
        self.print_summary(results, weights)
        print(f"\nbench took {time.monotonic() - started:.0f} s", flush=True)

    @staticmethod
    def _chromium_version() -> str:
        with contextlib.suppress(Exception):
            import subprocess

            from tests.support.browser import chromium_path

            out = subprocess.run([chromium_path(), "--version"], capture_output=True, text=True, timeout=20).stdout
            return out.split()[1]
        return "?"

    def print_size(self, size: int, r: dict) -> None:
        print(f"{size:>9,} rows       httpx: wall      chromium: served   responseStart     first paint"
              "   (median p95)")
        for label in [*(t for t, _ in TIMED), "API dead list"]:
            x = r[label]
            browser = (f"{med_p95(x['served'])}  {med_p95(x['ttfb'])}  {med_p95(x['fcp'])}" if "fcp" in x
                       else f"{'—':>15}  {'—':>15}  {'—':>15}")
            print(f"  {label:<16} {med_p95(x['http'])}  {browser}")
        static = sum(r[label]["static"] for label, _ in TIMED)
        static_304 = sum(r[label]["static_304"] for label, _ in TIMED)
        print(f"  (timed browser loads fetched {static} scripts/stylesheets, {static_304} of them revalidated with "
              f"a 304; other work on this machine: {r['_elsewhere_cores']:.2f} cores busy outside the bench)",
              flush=True)

    def print_summary(self, results: dict, weights: list) -> None:
        small, big = SMALL_ROWS, self.args.rows
        print(f"\ngrowth, medians in ms                 {small:>10,} {big:>10,}     ×")
        for label in [*(t for t, _ in TIMED), "API dead list"]:
            for metric, name in (("http", "httpx wall"), ("served", "served to chromium"), ("fcp", "first paint")):
                if metric in results[small][label]:
                    a = statistics.median(results[small][label][metric])
                    b = statistics.median(results[big][label][metric])
                    print(f"  {label + ', ' + name:<36} {a:10.1f} {b:10.1f} {b / a:5.1f}")
        print(f"\nSQL statements per view, median of 5 in-process executions, ms   {small:>8,} {big:>9,}")
        for st_small, st_big in zip(results[small]["_statements"], results[big]["_statements"], strict=True):
            print(f"  {st_big['view']:<14} {st_big['fn']:<49} {st_small['ms']:8.1f} {st_big['ms']:9.1f}")
        slowest, seen = [], set()
        for st in sorted(results[big]["_statements"], key=lambda st: -st["ms"]):
            if st["sql"] not in seen and len(slowest) < 3:
                seen.add(st["sql"])
                slowest.append(st)
        for n, st in enumerate(slowest, 1):
            views = sorted({x["view"] for x in results[big]["_statements"] if x["sql"] == st["sql"]})
            print(f"\nslowest #{n} at {big:,} rows: {st['fn']} ({', '.join(views)}), {st['ms']:.1f} ms\n"
                  f"  {st['sql']}\nEXPLAIN (ANALYZE, BUFFERS):\n  " + st["plan"].replace("\n", "\n  "))
        print("\npage weight, first visit, uncompressed bytes   html      js     css   total  (+ fragments by script)")
        for label, w in weights:
            total = w["html"] + w["js"] + w["css"]
            extra = f"  + {w['fragments']:,}" if w["fragments"] else ""
            print(f"  {label:<22} {w['html']:>22,} {w['js']:>7,} {w['css']:>7,} {total:>7,}{extra}")


class _Self:
    """This process as a `process_tree` argument (it, the Playwright driver and chromium)."""

    pid = os.getpid()

    @staticmethod
    def poll():
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the larger fill (the first is 10,000)")
    parser.add_argument("--runs", type=int, default=15, help="timed loads per view and size")
    parser.add_argument("--warmup", type=int, default=2, help="untimed loads before them")
    parser.add_argument("--keep", action="store_true", help=f"keep the database {DB_NAME} at the end")
    parser.add_argument("--max-seconds", type=int, default=1800, help="hard limit for the whole run")
    args = parser.parse_args(argv)
    if args.rows <= SMALL_ROWS or args.runs < 1 or args.warmup < 0:
        parser.error(f"--rows must be more than {SMALL_ROWS:,}, --runs at least 1, --warmup at least 0")
    return run_guarded(Bench(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
