#!/usr/bin/env python
"""Where one ``POST /api/v1/notifications`` spends its time, against ``bench/bare_app.py``, in-process.

    .venv/bin/python bench/profile_api.py [--count 1000] [--rounds 3]

The explanation behind ``bench/api_latency.py``: both apps are driven through Flask's test client
(no gunicorn, no sockets to the app; the same WSGI work otherwise) on the same services — a fresh
PostgreSQL database and Redis db 13 (claimed like api_latency.py does, flushed at the end).

1. Per request: SQL statements, transactions, pool check-outs and pre-pings, for both apps.
2. CPU and wall per request of the real app as served and with ONE thing taken away at a time
   (the Celery publish, the audit row, the pool pre-ping, the ORM Session — a Core connection
   instead —, the auth check, the full-row response), then all of them; with alternatives ("~":
   a lean publish writing the same message with one LPUSH, INSERTs built once with values bound at
   execute, without RETURNING, row + audit entry in one CTE statement, and a combination); then the
   bare app. Variants interleaved over ``--rounds``, medians reported. Experiments are monkeypatches
   in this process only; no project file changes.
3. Step timers inside the real view (auth, validation, insert, audit, commit, publish, serialise).
4. The Celery publish alone (``send_task``) against a raw Redis ``LPUSH`` of a same-sized message.
5. A cProfile of both apps summed by package.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import cProfile
import json
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

from bench.api_latency import BODY, PATH, REDIS_DB, REDIS_OWNER_KEY, REDIS_URL  # noqa: E402
from bench.profile_deliver import pg_backend_cpu  # noqa: E402
from bench.throughput import PG_ADMIN_URL, BenchError  # noqa: E402

COUNTS: Counter = Counter()
PREBUILT: tuple = ()
TIMERS: defaultdict = defaultdict(float)


class NoPublish:
    def dispatch(self, notification_id: str, attempt: int) -> None:
        pass

    def run_requeue_job(self, job_id: str) -> None:
        pass


class _CoreTx:
    """What ``store`` needs of a session (``execute``, ``get_bind``) on a Core ``Connection``."""

    def __init__(self, conn):
        self._conn = conn

    def execute(self, *args, **kwargs):
        return self._conn.execute(*args, **kwargs)

    def get_bind(self):
        return self._conn.engine


class CoreSessions:
    """Experiment: ``sessions.begin()`` yields a Core connection in a transaction, no ORM Session."""

    def __init__(self, engine):
        self.engine = engine

    @contextlib.contextmanager
    def begin(self):
        with self.engine.begin() as conn:
            yield _CoreTx(conn)


def instrument_engines() -> None:
    """Count statements, commits, check-outs and pre-pings of every engine; time each statement."""
    from sqlalchemy import event
    from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    def before(conn, cursor, statement, params, context, executemany):
        COUNTS["statements"] += 1
        conn.info["t0"] = time.perf_counter()

    def after(conn, cursor, statement, params, context, executemany):
        TIMERS["sql execute (driver + server)"] += time.perf_counter() - conn.info.pop("t0", time.perf_counter())

    event.listen(Engine, "before_cursor_execute", before)
    event.listen(Engine, "after_cursor_execute", after)
    event.listen(Engine, "commit", lambda *a: COUNTS.update(["commits"]))
    event.listen(Pool, "checkout", lambda *a: COUNTS.update(["checkouts"]))
    ping = PGDialect_psycopg2.do_ping

    def counted_ping(self, dbapi_connection):
        COUNTS["pre_pings"] += 1
        t0 = time.perf_counter()
        try:
            return ping(self, dbapi_connection)
        finally:
            TIMERS["pool pre-ping (SELECT 1)"] += time.perf_counter() - t0

    PGDialect_psycopg2.do_ping = counted_ping


def timed(owner, name: str, label: str):
    """Wrap ``owner.name`` with a wall-clock accumulator; returns an undo function."""
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            TIMERS[label] += time.perf_counter() - t0

    setattr(owner, name, wrapper)
    return lambda: setattr(owner, name, original)


@contextlib.contextmanager
def patched(owner, name: str, value):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)


@contextlib.contextmanager
def multi(*managers):
    with contextlib.ExitStack() as stack:
        for m in managers:
            stack.enter_context(m)
        yield


# --- experiments: alternative implementations of intake steps (this process only) ---------------


def _prebuilt():
    from sqlalchemy.dialects import postgresql

    from certctl_notify.model import events
    from certctl_notify.model_ops import audit_log

    insert = postgresql.insert(events).on_conflict_do_nothing(index_elements=[events.c.dedupe_key])
    return insert.returning(*events.c), insert, audit_log.insert()


def insert_prebuilt(session, row: dict):
    """store.insert_notification with one statement built once, values bound at execute."""
    returning, _, _ = PREBUILT
    return session.execute(returning, row).first()


def insert_prebuilt_no_returning(session, row: dict):
    """… and no RETURNING: the response row is the inserted values plus the columns left NULL."""
    from types import SimpleNamespace

    from certctl_notify.model import events

    _, plain, _ = PREBUILT
    if session.execute(plain, row).rowcount != 1:
        return None
    return SimpleNamespace(**{**{c.name: None for c in events.c}, **row})


def add_audit_prebuilt(session, *, at, actor, action, target, detail=None, request_id=None):
    _, _, audit = PREBUILT
    session.execute(audit, {"at": at, "actor": actor, "action": action, "target": target, "detail": detail,
                            "request_id": request_id})


FUSED_SQL = """
WITH e AS (
    INSERT INTO notification_events (id, type, certificate_id, channel, recipient, subject, message, severity,
                                     status, retry_count, dedupe_key, created_at, updated_at, dispatched_at)
    VALUES (:id, :type, :certificate_id, :channel, :recipient, :subject, :message, :severity,
            :status, :retry_count, :dedupe_key, :created_at, :updated_at, :dispatched_at)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING *
), a AS (
    INSERT INTO audit_log (at, actor, action, target, detail, request_id)
    SELECT :created_at, :actor, 'enqueue', e.id, CAST(:detail AS json), :request_id FROM e
     WHERE CAST(:actor AS text) IS NOT NULL
)
SELECT * FROM e
"""


def enqueue_alert_fused(sessions, dispatcher, fields, *, actor=None, now=None):
    """client.enqueue_alert with the row and its audit entry written by ONE statement (a CTE)."""
    from sqlalchemy import text

    from certctl_notify import store
    from certctl_notify.alerts import parse_alert
    from certctl_notify.client import Enqueued
    from certctl_notify.dispatch import dispatch_quietly
    from certctl_notify.model import utcnow

    alert = parse_alert(fields)
    moment = (now or utcnow)()
    results = []
    statement = text(FUSED_SQL)
    with sessions.begin() as session:
        for row in alert.rows(moment):
            inserted = session.execute(statement, {
                **row, "actor": actor.name if actor else None, "request_id": actor.request_id if actor else None,
                "detail": json.dumps({"channel": row["channel"], "type": row["type"]}),
            }).first()
            if inserted is None:
                results.append(Enqueued(store.get_by_dedupe_key(session, row["dedupe_key"]), created=False))
            else:
                results.append(Enqueued(inserted, created=True))
    for result in results:
        if result.created:
            dispatch_quietly(dispatcher, result.row.id, 1)
    return results


def capture_message_template(producer, client) -> dict:
    """One real ``send_task`` message as kombu's Redis transport stored it (then removed)."""
    producer.send_task("certctl_notify.deliver", args=["notif_template", 1], retries=0, queue="certctl.deliver")
    return json.loads(client.lpop("certctl.deliver"))


class LeanDispatcher:
    """Experiment: the same Celery protocol-2 message kombu's Redis transport writes (fresh task id,
    args, delivery tag), built by hand and LPUSHed on one long-lived redis client. Only a cost
    estimate for a leaner publisher: not exercised against a worker here."""

    def __init__(self, url: str, template: dict):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5)
        self.template = template

    def dispatch(self, notification_id: str, attempt: int) -> None:
        task_id = str(uuid.uuid4())
        args = [notification_id, attempt]
        body = json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}])
        t = self.template
        message = {
            **t,
            "body": base64.b64encode(body.encode()).decode(),
            "headers": {**t["headers"], "id": task_id, "root_id": task_id, "retries": attempt - 1,
                        "argsrepr": repr(args)},
            "properties": {**t["properties"], "correlation_id": task_id, "delivery_tag": str(uuid.uuid4())},
        }
        self.client.lpush("certctl.deliver", json.dumps(message))

    def run_requeue_job(self, job_id: str) -> None:
        raise NotImplementedError


def create_experiment_app(pre_ping: bool = True):
    """gunicorn factory for ``bench/api_latency.py --extra-target``: the real API with three changes
    applied by monkeypatch in the worker process only — row + audit entry in one CTE statement, a Core
    connection instead of the ORM Session, the lean publish (``pre_ping=False`` also drops the pool
    pre-ping). Auth, validation and the full-row response are unchanged."""
    import redis

    import certctl_notify.client
    from api.app import create_app
    from certctl_notify.config import load_settings
    from certctl_notify.db import make_engine

    settings = load_settings()
    app = create_app(settings)
    deps = app.extensions["certctl"]
    deps.sessions = CoreSessions(make_engine(settings.database_url, pool_pre_ping=pre_ping))
    client = redis.Redis.from_url(settings.broker_url, socket_timeout=5)
    deps.dispatcher = LeanDispatcher(settings.broker_url, capture_message_template(deps.producer, client))
    client.close()
    certctl_notify.client.enqueue_alert = enqueue_alert_fused
    return app


def by_package(profile: cProfile.Profile, n: int, name: str, top: int = 14) -> None:
    """Own time summed by package, then the heaviest functions (ms per request, profiler-inflated)."""
    stats = pstats.Stats(profile)
    totals: Counter = Counter()
    for (filename, _line, _func), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():
        path = filename.replace("\\", "/")
        if "site-packages/" in path:
            package = path.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
        elif str(ROOT) + "/" in path:
            package = "/".join(path.split(str(ROOT) + "/", 1)[1].split("/")[:2]).removesuffix(".py")
        elif path.startswith(("~", "<")):
            package = "builtins (C: sockets, json, …)"
        else:
            package = "stdlib: " + Path(path).stem
        totals[package] += tottime
    grand = sum(totals.values())
    print(f"\ncProfile of {name}: own time by package, ms per request (total {1000 * grand / n:.2f}):")
    for package, seconds in totals.most_common(top):
        print(f"  {1000 * seconds / n:7.3f}  {seconds / grand:5.1%}  {package}")
    print("  top functions by cumulative time:")
    stats.sort_stats("cumulative").print_stats(top + 16)


def drive(client, n: int, headers: dict, body: bytes, dbname: str) -> dict:
    """``n`` sequential POSTs; per-request CPU (this process), wall and PostgreSQL backend CPU."""
    COUNTS.clear()
    TIMERS.clear()
    pg0, c0, t0 = pg_backend_cpu(dbname), time.process_time(), time.perf_counter()
    for _ in range(n):
        response = client.post(PATH, data=body, headers=headers)
        if response.status_code != 202:
            raise BenchError(f"answered {response.status_code}: {response.get_data()[:300]!r}")
    t1, c1 = time.perf_counter(), time.process_time()
    pg1 = pg_backend_cpu(dbname)
    return {"wall_ms": 1000 * (t1 - t0) / n, "cpu_ms": 1000 * (c1 - c0) / n, "pg_ms": 1000 * (pg1 - pg0) / n,
            "counts": {k: v / n for k, v in COUNTS.items()}, "timers": {k: 1000 * v / n for k, v in TIMERS.items()},
            "response_bytes": len(response.get_data())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=1000, help="requests per variant and round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all variants (medians)")
    args = parser.parse_args(argv)

    import os

    import redis
    from sqlalchemy import create_engine, text
    from sqlalchemy.orm.session import SessionTransaction

    import api.auth
    import api.notifications
    import api.serialize
    import certctl_notify.client
    import certctl_notify.store
    from api.app import create_app
    from certctl_notify.config import load_settings
    from certctl_notify.db import make_engine, make_sessions
    from certctl_notify.migrate import upgrade
    from certctl_notify.producer import make_producer

    dbname = f"certctl_bench_{uuid.uuid4().hex[:10]}"
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{dbname}"
    owner = f"bench/profile_api.py pid {os.getpid()} {uuid.uuid4().hex}"
    r = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
    if not r.set(REDIS_OWNER_KEY, owner, nx=True, ex=3600):
        raise SystemExit(f"Redis db {REDIS_DB} is taken ({r.get(REDIS_OWNER_KEY)!r}); try again later")
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    engines = []
    try:
        r.flushdb()
        r.set(REDIS_OWNER_KEY, owner, ex=3600)
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{dbname}"'))
        upgrade(url)
        instrument_engines()
        global PREBUILT
        PREBUILT = _prebuilt()
        key = uuid.uuid4().hex
        env = {"CERTCTL_DATABASE_URL": url, "CERTCTL_BROKER_URL": REDIS_URL,
               "CERTCTL_API_KEYS": f"bench:{key}:admin", "CERTCTL_LOG_LEVEL": "WARNING"}
        settings = load_settings(env)
        os.environ["CERTCTL_DATABASE_URL"] = url  # for bench.bare_app
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        body = json.dumps(BODY).encode()

        def certctl_app(**kw):
            app = create_app(kw.pop("settings", settings), **kw)
            engines.append(app.extensions["certctl"].sessions.kw["bind"])
            return app

        no_ping_engine = make_engine(url, pool_pre_ping=False)
        ping_engine = make_engine(url)
        engines += [no_ping_engine, ping_engine]

        def with_sessions(sessions, **kw):
            app = certctl_app(**kw)
            app.extensions["certctl"].sessions = sessions
            return app

        def id_only(row, *, max_attempts):
            return {"id": row.id}

        no_audit = lambda: patched(certctl_notify.client, "record_audit", lambda *a, **k: None)  # noqa: E731
        prebuilt = lambda: multi(patched(certctl_notify.store, "insert_notification", insert_prebuilt),  # noqa: E731
                                 patched(certctl_notify.store, "add_audit", add_audit_prebuilt))
        no_returning = lambda: multi(  # noqa: E731
            patched(certctl_notify.store, "insert_notification", insert_prebuilt_no_returning),
            patched(certctl_notify.store, "add_audit", add_audit_prebuilt))
        fused = lambda: patched(certctl_notify.client, "enqueue_alert", enqueue_alert_fused)  # noqa: E731
        template = capture_message_template(make_producer(REDIS_URL), r)
        lean = LeanDispatcher(REDIS_URL, template)
        lean.dispatch("notif_check", 1)
        check = json.loads(r.lpop("certctl.deliver"))
        if any(set(check.get(k) or {}) != set(template.get(k) or {}) for k in ("headers", "properties")) \
                or set(check) != set(template):
            raise BenchError(f"the lean message differs in shape from kombu's: {check} vs {template}")
        auth_off = load_settings({**env, "CERTCTL_AUTH_TYPE": "none"})

        from bench.bare_app import create_app as bare_create_app

        # name → (app, factory of the context manager holding this variant's monkeypatches)
        none = contextlib.nullcontext
        variants = {
            "certctl-notify as served": (certctl_app(), none),
            "  − Celery publish (no-op dispatcher)": (certctl_app(dispatcher=NoPublish()), none),
            "  − audit row": (certctl_app(), no_audit),
            "  − pool pre-ping": (with_sessions(make_sessions(no_ping_engine)), none),
            "  − ORM Session (Core connection)": (with_sessions(CoreSessions(ping_engine)), none),
            "  − auth (CERTCTL_AUTH_TYPE=none)": (certctl_app(settings=auth_off), none),
            "  − full-row response (id only)": (certctl_app(), lambda: patched(api.serialize, "notification",
                                                                                id_only)),
            "  − all six above": (with_sessions(CoreSessions(no_ping_engine), settings=auth_off,
                                                dispatcher=NoPublish()),
                                  lambda: multi(no_audit(), patched(api.serialize, "notification", id_only))),
            "  ~ lean publish (same message, 1 LPUSH)": (certctl_app(dispatcher=lean), none),
            "  ~ prebuilt INSERTs (params at execute)": (certctl_app(), prebuilt),
            "  ~ prebuilt INSERTs, no RETURNING": (certctl_app(), no_returning),
            "  ~ row + audit in one statement (CTE)": (certctl_app(), fused),
            "  ~ lean publish + CTE + Core connection": (with_sessions(CoreSessions(ping_engine), dispatcher=lean),
                                                         fused),
            "bare app (bench/bare_app.py)": (bare_create_app(), none),
        }
        clients = {name: app.test_client() for name, (app, _) in variants.items()}

        # 1 + 2: interleaved rounds
        results: dict[str, list[dict]] = defaultdict(list)
        for name, (_, ctx) in variants.items():  # warm-up: first connections, caches
            with ctx():
                drive(clients[name], 100, headers, body, dbname)
        for _ in range(args.rounds):
            for name, (_, ctx) in variants.items():
                with ctx():
                    results[name].append(drive(clients[name], args.count, headers, body, dbname))

        served = statistics.median(x["cpu_ms"] for x in results["certctl-notify as served"])
        bare = statistics.median(x["cpu_ms"] for x in results["bare app (bench/bare_app.py)"])
        print(f"{args.count} sequential requests per variant × {args.rounds} rounds, Flask test client in "
              f"one process (medians; 'Δ' = CPU saved against 'as served')\n")
        print(f"  {'variant':<40}{'CPU ms':>8}{'Δ CPU':>8}{'wall ms':>9}{'PG ms':>7}  per request: SQL / commits "
              "/ checkouts / pre-pings, response bytes")
        for name, rs in results.items():
            cpu = statistics.median(x["cpu_ms"] for x in rs)
            wall = statistics.median(x["wall_ms"] for x in rs)
            pg = statistics.median(x["pg_ms"] for x in rs)
            c = rs[-1]["counts"]
            delta = "" if name.startswith(("certctl", "bare")) else f"{served - cpu:+.2f}"
            print(f"  {name:<40}{cpu:8.2f}{delta:>8}{wall:9.2f}{pg:7.2f}  "
                  f"{c.get('statements', 0):.0f} / {c.get('commits', 0):.0f} / {c.get('checkouts', 0):.0f} / "
                  f"{c.get('pre_pings', 0):.0f}, {rs[-1]['response_bytes']} B")
        print(f"\n  app-process CPU: certctl-notify {served:.2f} ms vs bare {bare:.2f} ms per request "
              f"(the in-process ratio of CPU-bound throughput would be about {bare / served:.2f})")

        # 3: step timers inside the real view
        undo = [
            timed(api.auth, "_key_for", "auth: key lookup (hmac)"),
            timed(certctl_notify.client, "parse_alert", "validate (parse_alert)"),
            timed(certctl_notify.store, "insert_notification", "insert row (incl. checkout, pre-ping)"),
            timed(certctl_notify.client, "record_audit", "audit row insert"),
            timed(SessionTransaction, "commit", "commit + release"),
            timed(certctl_notify.client, "dispatch_quietly", "Celery publish (send_task)"),
            timed(api.serialize, "notification", "serialise row"),
            timed(api.notifications, "jsonify", "jsonify response"),
        ]
        app = variants["certctl-notify as served"][0]
        view = app.view_functions["notifications.create"]

        def timed_view(*a, **k):
            t0 = time.perf_counter()
            try:
                return view(*a, **k)
            finally:
                TIMERS["view total (auth decorator + view)"] += time.perf_counter() - t0

        app.view_functions["notifications.create"] = timed_view
        try:
            steps = drive(clients["certctl-notify as served"], args.count, headers, body, dbname)
        finally:
            app.view_functions["notifications.create"] = view
            for u in undo:
                u()
        print(f"\nsteps of the real request (wall ms per request, timers nest: insert/audit/commit include "
              f"their SQL; total wall {steps['wall_ms']:.2f}):")
        for label, ms in sorted(steps["timers"].items(), key=lambda kv: -kv[1]):
            print(f"  {ms:7.3f}  {label}")
        outside = steps["wall_ms"] - steps["timers"].get("view total (auth decorator + view)", 0)
        print(f"  {outside:7.3f}  outside the view (Flask/Werkzeug "
              "request + response, test client, before/after_request hooks)")

        # 4: the publish alone
        producer = make_producer(REDIS_URL)
        for _ in range(50):
            producer.send_task("certctl_notify.deliver", args=["notif_warm", 1], retries=0, queue="certctl.deliver")
        n = args.count
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            producer.send_task("certctl_notify.deliver", args=[f"notif_{uuid.uuid4().hex}", 1], retries=0,
                               queue="certctl.deliver")
        celery_wall, celery_cpu = (time.perf_counter() - t0) / n * 1000, (time.process_time() - c0) / n * 1000
        message = r.lindex("certctl.deliver", 0) or b"x" * 1000
        c0, t0 = time.process_time(), time.perf_counter()
        for _ in range(n):
            r.lpush("bench:raw", message)
        raw_wall, raw_cpu = (time.perf_counter() - t0) / n * 1000, (time.process_time() - c0) / n * 1000
        print(f"\npublish alone: Celery send_task {celery_cpu:.3f} ms CPU / {celery_wall:.3f} ms wall; "
              f"raw redis LPUSH of the same {len(message)}-byte message {raw_cpu:.3f} ms CPU / "
              f"{raw_wall:.3f} ms wall")

        # 5: cProfile
        for name in ("certctl-notify as served", "bare app (bench/bare_app.py)"):
            profile = cProfile.Profile()
            profile.enable()
            drive(clients[name], args.count, headers, body, dbname)
            profile.disable()
            by_package(profile, args.count, name)
    finally:
        for engine in engines:
            with contextlib.suppress(Exception):
                engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
        admin.dispose()
        if r.get(REDIS_OWNER_KEY) == owner.encode():
            r.flushdb()
        r.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
