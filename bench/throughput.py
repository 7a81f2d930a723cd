#!/usr/bin/env python
"""Throughput of notification delivery against the Celery floor, on real local services.

    .venv/bin/python bench/throughput.py --count 5000 [--concurrency 2]

Phase A pushes ``--count`` webhook alerts through intake (``enqueue_alert``: commit the row, then
publish) into a real ``celery -A workers.app worker --pool prefork`` that delivers them to a local
HTTP receiver, and times first enqueue → every row ``sent``. Phase B pushes as many no-op tasks
(``bench/noop_app.py``: the same ``celery_config``, same broker, same pool and concurrency) and
times first publish → all counted. The ratio of the two rates says how much of the Celery floor a
real delivery (claim, send, record in PostgreSQL) keeps; the target is 0.5.

Everything runs on 127.0.0.1 in a throw-away PostgreSQL database ``certctl_bench_<random>`` and
Redis db 12; both are removed at the end, and every wait has a timeout (plus an overall alarm).
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing as mp
import os
import platform
import shutil
import signal
import statistics
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

from bench.common import (  # noqa: E402
    BenchError,
    ScratchDatabase,
    cpu_by_pid,
    cpu_used,
    process_tree,
    run_cleanup,
    run_guarded,
    service_processes,
    system_busy,
)

#: Every service the benchmark talks to is on the loopback interface; nothing here is configurable
#: to point elsewhere.
REDIS_URL = "redis://127.0.0.1:6379/12"
#: How often completion is polled, in seconds.
POLL_SECONDS = 0.2
#: notifications/s ÷ no-op tasks/s we aim for.
TARGET_RATIO = 0.5
#: A Standard Webhooks secret, so deliveries are signed as in production.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"certctl-bench-webhook-secret-01").decode()


# --- the HTTP receiver (own process, so the bench's enqueue loop cannot starve it of the GIL) ---


def _serve_receiver(port_pipe, counter, stop) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the workers' httpx clients reuse connections

        def do_POST(self):
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            # One pre-built write: no Date/Server header formatting, answer at once with 200.
            self.wfile.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok")
            with counter.get_lock():
                counter.value += 1

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port_pipe.send(server.server_address[1])
    stop.wait()
    server.shutdown()
    server.server_close()


class Receiver:
    def __init__(self):
        ctx = mp.get_context("spawn")
        self.counter = ctx.Value("q", 0)
        self._stop = ctx.Event()
        parent, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_receiver, args=(child, self.counter, self._stop), daemon=True)
        self.proc.start()
        if not parent.poll(20):
            self.stop()
            raise BenchError("HTTP receiver did not start within 20 s")
        self.port = parent.recv()
        self.url = f"http://127.0.0.1:{self.port}/hook"

    @property
    def requests(self) -> int:
        return self.counter.value

    def probe(self, seconds: float = 1.5, clients: int = 2) -> float:
        """Requests/s the receiver answers for ``clients`` keep-alive clients in this process (a lower
        bound on its capacity: the clients share this process's GIL)."""
        counts: list[int] = []
        body = b'{"type":"probe"}'

        def run():
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            n, end = 0, time.monotonic() + seconds
            while time.monotonic() < end:
                conn.request("POST", "/probe", body=body, headers={"content-type": "application/json"})
                response = conn.getresponse()
                response.read()
                n += 1
            conn.close()
            counts.append(n)

        threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(seconds + 10)
        return sum(counts) / seconds

    def stop(self) -> None:
        self._stop.set()
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)


# --- workers ------------------------------------------------------------------------------------


class Worker:
    """``python -m celery -A <app> worker --pool prefork --concurrency N`` configured by environment."""

    def __init__(self, app: str, env: dict, concurrency: int, log_path: Path, *, cwd: Path = ROOT):
        self.log_path = log_path
        self.cwd = cwd
        self.env = env
        self.args = [
            sys.executable, "-m", "celery", "-A", app, "worker", "--pool", "prefork",
            "--concurrency", str(concurrency), "--loglevel", "WARNING",
            "--without-gossip", "--without-mingle",
            "--hostname", f"bench-{os.getpid()}-{app.replace('.', '_')}@%h",
        ]
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> Worker:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.args, cwd=self.cwd, env=self.env, stdout=self._log, stderr=subprocess.STDOUT
        )
        return self

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"worker {self.args[4]} exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def processes(self):
        return process_tree(self.proc)

    def stop(self, timeout: float = 30) -> None:
        """Warm shutdown (SIGTERM); SIGKILL this worker's own processes if it does not exit in time."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                for process in self.processes()[1:]:
                    process.kill()
                self.proc.kill()
                self.proc.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None


# --- measuring ----------------------------------------------------------------------------------


def wait_until(
    predicate, timeout: float, what: str, worker: Worker | None = None, interval: float = POLL_SECONDS
):
    """Poll ``predicate`` until truthy; returns (value, monotonic time it was seen)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        seen = time.monotonic()
        if value:
            return value, seen
        if worker is not None:
            worker.check_alive()
        if seen >= deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


class CpuMeter:
    """CPU seconds of the processes involved, per component, between two snapshots."""

    def __init__(self, *, worker: Worker, receiver: Receiver, dbname: str):
        self.worker, self.receiver, self.dbname = worker, receiver, dbname

    def _groups(self) -> dict[str, list]:
        import psutil

        worker = self.worker.processes()
        services = service_processes(self.dbname)
        return {"worker (main)": worker[:1], "worker (pool)": worker[1:], "bench (producer)": [psutil.Process()],
                "receiver": [psutil.Process(self.receiver.proc.pid)], "postgres (bench db)": services["bench db"],
                "postgres (shared)": services["background"] + services["other backends"],
                "redis": services["redis"]}

    def snapshot(self) -> dict:
        return {"groups": cpu_by_pid(self._groups()), "system_busy": system_busy(), "at": time.monotonic()}

    @staticmethod
    def diff(before: dict, after: dict) -> dict[str, float]:
        out = cpu_used(before["groups"], after["groups"])
        out["all processes (system)"] = after["system_busy"] - before["system_busy"]
        return out


def worker_cpu(result: dict) -> float:
    return result["cpu_s"]["worker (main)"] + result["cpu_s"]["worker (pool)"]


def pg_stats(engine, dbname: str) -> dict:
    from sqlalchemy import text

    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_returned, tup_fetched"
            " FROM pg_stat_database WHERE datname = :d"), {"d": dbname}).mappings().first()
    return dict(row)


# --- the benchmark ------------------------------------------------------------------------------


def alert_fields(tag: str, i: int) -> dict:
    return {
        "type": "ExpirationWarning",
        "channel": "Webhook",
        "message": f"certificate {tag}-{i} (www{i}.example.test) expires in 7 days",
        "certificate_id": f"{tag}-{i}",
        "severity": "warning",
    }


class Bench:
    def __init__(self, args):
        self.args = args
        self.db = ScratchDatabase()
        self.dbname, self.database_url = self.db.name, self.db.url
        self.tmp = Path(tempfile.mkdtemp(prefix="certctl-bench-"))
        self.redis = None
        self.receiver: Receiver | None = None
        self.workers: list[Worker] = []
        self.engines: list = []
        self.failed = False
        self.results: dict = {}

    # -- set-up / tear-down --

    def setup(self) -> None:
        import redis


        self.redis = redis.Redis.from_url(REDIS_URL, socket_timeout=10)
        self.redis.flushdb()
        self.db.create()
        self.receiver = Receiver()

    def logs(self):
        """(title, tail) of every worker log, for a failure report."""
        return [(w.log_path.name, w.log_tail()) for w in self.workers if w.proc is not None]

    def cleanup(self) -> None:
        steps = [
            ("stop workers", lambda: [w.stop() for w in self.workers]),
            ("stop receiver", lambda: self.receiver and self.receiver.stop()),
            ("dispose engines", lambda: [e.dispose() for e in self.engines]),
            ("flush redis db 12", lambda: self.redis and (self.redis.flushdb(), self.redis.close())),
            ("drop database", self.db.drop),
        ]
        run_cleanup(steps)
        if self.failed or self.args.keep_logs:
            print(f"worker logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def env(self) -> dict:
        """The production environment, pointed at the bench's services (no other CERTCTL_* leaks in)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CERTCTL_")}
        env.update({
            "CERTCTL_DATABASE_URL": self.database_url,
            "CERTCTL_BROKER_URL": REDIS_URL,
            "CERTCTL_WEBHOOK_URL": self.receiver.url,
            "CERTCTL_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "CERTCTL_OUTBOUND_ALLOW": "127.0.0.1/32",
            "CERTCTL_LOG_LEVEL": self.args.log_level,
            "CERTCTL_DATA_DIR": str(self.tmp / "data"),
            "CERTCTL_WORKER_CONCURRENCY": str(self.args.concurrency),
        })
        return env

    def start_worker(self, app: str, env: dict) -> Worker:
        worker = Worker(app, env, self.args.concurrency, self.tmp / f"{app}.log").start()
        self.workers.append(worker)
        return worker

    # -- phases --

    def wait_for_quiet(self, label: str, meter: CpuMeter) -> None:
        """Wait (at most ``--quiet-wait`` s) until processes outside the benchmark use < 0.15 cores,
        so another job on a small machine does not decide the figure; say so if it never got quiet."""
        deadline = time.monotonic() + self.args.quiet_wait
        while True:
            before = meter.snapshot()
            time.sleep(1.0)
            cpu = CpuMeter.diff(before, meter.snapshot())
            elapsed = time.monotonic() - before["at"]
            system = cpu.pop("all processes (system)")
            other = (system - sum(cpu.values())) / elapsed
            if other < 0.15:
                return
            if time.monotonic() >= deadline:
                print(f"  note: {other:.2f} cores busy outside the benchmark before {label}; "
                      "measuring anyway", flush=True)
                return

    def _timed_run(self, label: str, produce, progress, worker: Worker, meter: CpuMeter) -> dict:
        """Run ``produce(i)`` for each item in a thread while polling ``progress()`` until it reaches
        ``count``; returns timings and CPU use."""
        count = self.args.count
        state: dict = {"done_at": None, "error": None}
        stop = threading.Event()

        def producer():
            try:
                for i in range(count):
                    if stop.is_set():
                        return
                    produce(i)
                state["done_at"] = time.monotonic()
            except BaseException as exc:  # reported by the main thread
                state["error"] = exc

        self.wait_for_quiet(label, meter)
        receiver_before = self.receiver.requests
        cpu_before = meter.snapshot()
        started = time.monotonic()
        thread = threading.Thread(target=producer, name=f"{label}-producer", daemon=True)
        thread.start()

        def finished():
            if state["error"] is not None:
                error = state["error"]
                raise BenchError(f"{label}: producing failed: {type(error).__name__}: {error}")
            return progress() >= count

        try:
            _, finished_at = wait_until(finished, self.args.timeout, f"{label}: {count} completions", worker)
        finally:
            stop.set()
            thread.join(30)
        cpu = CpuMeter.diff(cpu_before, meter.snapshot())
        elapsed = finished_at - started
        ours = sum(v for k, v in cpu.items() if k != "all processes (system)")
        produce_elapsed = (state["done_at"] or finished_at) - started
        return {
            "elapsed_s": elapsed,
            "rate_per_s": count / elapsed,
            "produce_elapsed_s": produce_elapsed,
            "produce_rate_per_s": count / produce_elapsed,
            "receiver_requests": self.receiver.requests - receiver_before,
            "cpu_s": cpu,
            "other_cores": (cpu["all processes (system)"] - ours) / elapsed,
        }

    def phase_a(self, tag: str) -> dict:
        """Notifications tagged ``tag`` (their certificate_id prefix), so rounds never count each other's rows."""
        from sqlalchemy import text

        from certctl_notify.db import make_sessions
        from certctl_notify.environment import load_settings
        from certctl_notify.intake import enqueue_alert
        from certctl_notify.publish import CeleryDispatcher, make_producer

        env = self.env()
        settings = load_settings(env)
        sessions = make_sessions(settings.database_url)
        self.engines.append(sessions)
        engine = sessions.engine
        dispatcher = CeleryDispatcher(make_producer(settings.broker_url))
        worker = self.start_worker("workers.app", env)

        def count(status_sql: str, prefix: str) -> int:
            with engine.connect() as conn:
                return conn.execute(text(
                    f"SELECT count(*) FROM notification_events"
                    f" WHERE {status_sql} AND certificate_id LIKE :t"),
                    {"t": f"{prefix}-%"}).scalar_one()

        def check_no_failures(prefix: str):
            bad = count("status IN ('failed', 'dead')", prefix)
            if bad:
                with engine.connect() as conn:
                    sample = conn.execute(text(
                        "SELECT status, last_error FROM notification_events"
                        " WHERE status IN ('failed', 'dead') LIMIT 1"
                    )).first()
                raise BenchError(f"{bad} notifications failed instead of being sent, e.g. {tuple(sample)}")

        # Warm-up (also the readiness check): boot, first DB/HTTP connections of every pool process.
        warm = self.args.warmup
        for i in range(warm):
            enqueue_alert(sessions, dispatcher, alert_fields(f"warmup{tag}", i))

        def warmed():
            check_no_failures(f"warmup{tag}")
            return count("status = 'sent'", f"warmup{tag}") >= warm

        wait_until(warmed, self.args.start_timeout, "the delivery worker to deliver its warm-up alerts",
                   worker)

        meter = CpuMeter(worker=worker, receiver=self.receiver, dbname=self.dbname)
        stats_before = pg_stats(self.db.admin, self.dbname)
        polls = [0]

        def progress():
            polls[0] += 1
            check_no_failures(tag)
            return count("status = 'sent'", tag)

        result = self._timed_run(
            "notifications",
            lambda i: enqueue_alert(sessions, dispatcher, alert_fields(tag, i)),
            progress, worker, meter,
        )
        worker.stop()
        time.sleep(1.2)  # let PostgreSQL publish the exited backends' statistics
        stats_after = pg_stats(self.db.admin, self.dbname)
        result["pg"] = {k: stats_after[k] - stats_before[k] for k in stats_after}
        result["polls"] = polls[0]
        with engine.connect() as conn:
            row = conn.execute(text(
                "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY a.duration_ms) AS attempt_p50,"
                "       percentile_cont(0.95) WITHIN GROUP (ORDER BY a.duration_ms) AS attempt_p95,"
                "       count(*) AS attempts"
                "  FROM notification_attempts a JOIN notification_events e ON e.id = a.notification_id"
                " WHERE e.certificate_id LIKE :t"), {"t": f"{tag}-%"}).mappings().first()
            result["attempt_ms_p50"] = row["attempt_p50"]
            result["attempt_ms_p95"] = row["attempt_p95"]
            result["attempts"] = row["attempts"]
        return result

    def phase_b(self) -> dict:
        """Celery's floor: no-op tasks under the delivery worker's settings."""
        from bench.noop_app import COUNTER_KEY, NOOP_TASK

        return self._counted_phase("no-op tasks", NOOP_TASK, COUNTER_KEY, lambda i: [])

    def phase_c(self) -> dict:
        """The same webhook POST from a Celery task with no bookkeeping: what delivery alone costs."""
        from bench.noop_app import POST_COUNTER_KEY, POST_TASK

        return self._counted_phase("webhook posts", POST_TASK, POST_COUNTER_KEY, lambda i: [i])

    def _counted_phase(self, label: str, task: str, counter_key: str, args_for) -> dict:
        """``count`` publishes of one ``bench.noop_app`` task, done when its Redis counter reaches
        ``count``; same queue and publish options as CeleryDispatcher.dispatch on Redis."""
        from certctl_notify.publish import DELIVERY_QUEUE, make_producer

        producer = make_producer(REDIS_URL)
        worker = self.start_worker("bench.noop_app", self.env())

        def done() -> int:
            return int(self.redis.get(counter_key) or 0)

        def publish(i):
            args = args_for(i)
            producer.send_task(task, args=args, queue=DELIVERY_QUEUE, argsrepr=repr(args), kwargsrepr="{}",
                               declare=[])

        try:
            warm = self.args.warmup
            for i in range(warm):
                publish(i)
            wait_until(lambda: done() >= warm, self.args.start_timeout,
                       f"the {label} worker to run its warm-up tasks", worker)
            self.redis.delete(counter_key)
            meter = CpuMeter(worker=worker, receiver=self.receiver, dbname=self.dbname)
            result = self._timed_run(label, publish, done, worker, meter)
            worker.stop()
            return result
        finally:
            producer.close()

    # -- report --

    def run(self) -> dict:
        import celery
        import sqlalchemy

        self.setup()
        probe = self.receiver.probe()
        with self.db.admin.connect() as conn:
            pg_version = conn.exec_driver_sql("SHOW server_version").scalar()
        info = {
            "cores": os.cpu_count(),
            "concurrency": self.args.concurrency,
            "count": self.args.count,
            "python": platform.python_version(),
            "celery": celery.__version__,
            "sqlalchemy": sqlalchemy.__version__,
            "postgresql": pg_version,
            "redis": self.redis.info("server").get("redis_version"),
            "log_level": self.args.log_level,
        }
        print(f"environment: {info['cores']} cores, concurrency {info['concurrency']}, "
              f"count {info['count']}, "
              f"python {info['python']}, celery {info['celery']}, PostgreSQL {info['postgresql']}, "
              f"Redis {info['redis']}, worker log level {info['log_level']}", flush=True)
        print(f"receiver: {self.receiver.url}, answers ≥ {probe:,.0f} req/s "
              "(probe: 2 keep-alive clients)", flush=True)

        rounds = []
        for n in range(1, self.args.rounds + 1):
            if self.args.rounds > 1:
                print(f"round {n} of {self.args.rounds}", flush=True)
            rounds.append(self._round(f"bench{n}", probe))
        a, b, c = (self._median_phase([r[k] for r in rounds]) for k in "abc")
        ratios = [r["a"]["rate_per_s"] / r["b"]["rate_per_s"] for r in rounds]
        ratio = statistics.median(ratios)
        print()
        if len(rounds) > 1:
            per_round = [f"{r['a']['rate_per_s']:,.1f}, {r['b']['rate_per_s']:,.1f}, {q:.3f}"
                         for r, q in zip(rounds, ratios, strict=True)]
            print("per round (notifications/s, no-op/s, ratio): " + "; ".join(per_round))
            print("medians over the rounds (the ratio is the median of each round's own ratio):")
        print(f"notifications/s      : {a['rate_per_s']:,.1f}   "
              f"(enqueue alone {a['produce_rate_per_s']:,.1f}/s)")
        print(f"no-op tasks/s        : {b['rate_per_s']:,.1f}   "
              f"(publish alone {b['produce_rate_per_s']:,.1f}/s)")
        print(f"webhook posts/s      : {c['rate_per_s']:,.1f}   (same channel, no bookkeeping; "
              f"notifications ÷ posts = {a['rate_per_s'] / c['rate_per_s']:.3f})")
        print(f"ratio                : {ratio:.3f}   target {TARGET_RATIO} "
              f"({'met' if ratio >= TARGET_RATIO else 'NOT met'})")
        print(f"environment          : {info['cores']} cores, concurrency {info['concurrency']}, "
              f"count {info['count']}, rounds {len(rounds)}")
        figures = {
            "notifications_per_s": round(a["rate_per_s"], 2),
            "enqueue_per_s": round(a["produce_rate_per_s"], 2),
            "noop_per_s": round(b["rate_per_s"], 2),
            "noop_publish_per_s": round(b["produce_rate_per_s"], 2),
            "ratio": round(ratio, 4),
            "ratios": [round(q, 4) for q in ratios],
            "webhook_posts_per_s": round(c["rate_per_s"], 2),
            "ratio_to_posts": round(a["rate_per_s"] / c["rate_per_s"], 4),
            "target_ratio": TARGET_RATIO,
            "notifications_elapsed_s": round(a["elapsed_s"], 3),
            "noop_elapsed_s": round(b["elapsed_s"], 3),
            "receiver_capacity_per_s": round(probe, 1),
            "receiver_observed_per_s": round(a["receiver_requests"] / a["elapsed_s"], 1),
            "worker_cpu_ms_per_notification": round(1000 * worker_cpu(a) / self.args.count, 3),
            "worker_cpu_ms_per_noop": round(1000 * worker_cpu(b) / self.args.count, 3),
            "other_load_cores_a": round(a["other_cores"], 2),
            "other_load_cores_b": round(b["other_cores"], 2),
            "attempt_ms_p50": a["attempt_ms_p50"],
            "pg_commits_per_notification": round(a["pg"]["xact_commit"] / self.args.count, 3),
            "rounds": len(rounds),
            **info,
        }
        print(json.dumps(figures), flush=True)
        return figures

    def _round(self, tag: str, probe: float) -> dict:
        """Phases A, B and C once, each printed as it ends; B and C right after A, so a machine whose
        speed drifts is compared with itself."""
        print("phase A: notifications (enqueue_alert → workers.app deliver → receiver) …", flush=True)
        a = self.phase_a(tag)
        observed = a["receiver_requests"] / a["elapsed_s"]
        self._print_phase(a, "notifications", extra=(
            f"  receiver       : {a['receiver_requests']} requests, {observed:,.0f} req/s "
            f"({observed / probe:.0%} of probed capacity), "
            f"CPU {a['cpu_s']['receiver'] / a['elapsed_s']:.0%} of a core",
            f"  per attempt    : p50 {a['attempt_ms_p50']:.0f} ms, p95 {a['attempt_ms_p95']:.0f} ms "
            f"(claim → recorded, as the row says), {a['attempts']} attempts for {self.args.count} rows",
            f"  PostgreSQL     : {a['pg']['xact_commit'] / self.args.count:.1f} commits + "
            f"{a['pg']['xact_rollback'] / self.args.count:.1f} rollbacks per notification "
            f"(incl. intake; {a['polls']} progress polls), "
            f"{a['pg']['tup_updated'] / self.args.count:.1f} rows updated, "
            f"{a['pg']['tup_inserted'] / self.args.count:.1f} inserted",
        ))
        print("phase B: no-op tasks (send_task → bench.noop_app, same celery_config) …", flush=True)
        b = self.phase_b()
        self._print_phase(b, "no-op tasks")
        print("phase C: webhook posts without bookkeeping (send_task → bench.post: same channel, no database) …",
              flush=True)
        c = self.phase_c()
        self._print_phase(c, "webhook posts")
        return {"a": a, "b": b, "c": c}

    @staticmethod
    def _median_phase(results: list[dict]) -> dict:
        """The round whose rate is the median (a real round, so its CPU and PostgreSQL figures belong
        together); for an even number of rounds the lower middle one."""
        ordered = sorted(results, key=lambda r: r["rate_per_s"])
        return ordered[(len(ordered) - 1) // 2]

    def _print_phase(self, r: dict, what: str, extra=()) -> None:
        n = self.args.count
        print(f"  {what:<15}: {n} in {r['elapsed_s']:.2f} s = {r['rate_per_s']:,.1f}/s; "
              f"producing alone {r['produce_elapsed_s']:.2f} s = {r['produce_rate_per_s']:,.1f}/s")
        cpu = r["cpu_s"]
        parts = ", ".join(f"{k} {1000 * v / n:.2f}" for k, v in cpu.items() if k != "all processes (system)")
        ours = sum(v for k, v in cpu.items() if k != "all processes (system)")
        print(f"  CPU ms per item: {parts}; total {1000 * ours / n:.2f}")
        other = (cpu["all processes (system)"] - ours) / r["elapsed_s"]
        busy = cpu["all processes (system)"] / r["elapsed_s"]
        print(f"  CPU busy       : {busy:.2f} of {os.cpu_count()} cores, "
              f"{ours / r['elapsed_s']:.2f} in the processes above, {other:.2f} elsewhere"
              + ("  (WARNING: other load on this machine skews the figures)" if other > 0.15 else ""))
        for line in extra:
            print(line)
        sys.stdout.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5000, help="notifications, and no-op tasks, per phase")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool size of each worker")
    parser.add_argument("--warmup", type=int, default=20, help="untimed items before each phase")
    parser.add_argument("--rounds", type=int, default=1,
                        help="repeat phases A, B and C; report each round and the median ratio")
    parser.add_argument("--log-level", default="WARNING", help="CERTCTL_LOG_LEVEL of the workers")
    parser.add_argument("--timeout", type=float, default=600, help="seconds each timed phase may take")
    parser.add_argument("--start-timeout", type=float, default=60,
                        help="seconds a worker may take to warm up")
    parser.add_argument("--quiet-wait", type=float, default=60,
                        help="seconds to wait for other load on the machine to stop before each phase")
    parser.add_argument("--max-seconds", type=int, default=1800, help="hard limit for the whole run")
    parser.add_argument("--keep-logs", action="store_true",
                        help="keep the worker logs (kept anyway on failure)")
    args = parser.parse_args(argv)
    if args.count < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--count, --concurrency and --rounds must be at least 1")

    return run_guarded(Bench(args), args.max_seconds)

if __name__ == "__main__":
    sys.exit(main())
