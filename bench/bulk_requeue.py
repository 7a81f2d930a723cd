"""Bulk requeue of many dead rows, on real local services: how fast the job requeues, how fast the rows
then go out, and that none goes out twice.

    .venv/bin/python -m bench.bulk_requeue --rows 100000 [--concurrency 2] [--workers 2]

It fills a throw-away ``certctl_bench_<random>`` database in SQL (`bench.seed`: ``--rows`` plus
``--throttled-rows`` (a tenth) dead rows, one failed attempt each, made Webhook rows), starts the API
(gunicorn, 2 workers), ``--workers`` ``certctl-notify worker`` (prefork, ``--concurrency``) and beat (sweep,
count folds, retries) against a local receiver that answers 200 at once and checks every signature, on a
free Redis db (claimed, its keys deleted at the end). Job 1 requeues the oldest ``--rows`` unthrottled
(``CERTCTL_REQUEUE_RATE=0``) through ``POST /api/v1/notifications/requeue``; job 2 the others after the API
is restarted with ``CERTCTL_REQUEUE_RATE=2000`` (``--throttled-rate``). For each: the job's rows/s (its
``created_at`` → ``finished_at``), every row ``sent`` (deliveries/s), requeue → sent per row (``sent_at`` −
``dispatched_at``, which the requeue stamps and a delivery leaves alone), receiver hits per notification id
(= webhook-id), and the cores each process kept busy. The last line is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import seed  # noqa: E402
from bench.common import (  # noqa: E402
    BenchError,
    ReceiverProcess,
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
from bench.throughput import WEBHOOK_SECRET, Worker  # noqa: E402

DEAD_ONLY = seed.Mix(sent=0, read=0, dead=1, failed=0, pending=0)
#: The rows `bench.seed` made (the warm-up alerts have other certificate ids).
SEEDED = "e.certificate_id LIKE 'mc-%'"
#: Seconds between progress polls while a job's rows go out.
POLL_SECONDS = 0.5


class Process(Worker):
    """Any command run as throughput's `Worker` runs a worker: log file, SIGTERM, then SIGKILL of its tree."""

    def __init__(self, args: list[str], env: dict, log_path: Path):
        super().__init__("workers.app", env, 1, log_path)
        self.args = args

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise BenchError(f"{self.log_path.stem} exited with {self.proc.returncode}:\n{self.log_tail()}")


def base_env(tmp: Path, database_url: str, broker_url: str, receiver_url: str, api_key: str,
             log_level: str, concurrency: int) -> dict:
    """The production environment pointed at the bench's services; no CERTCTL_* of the caller leaks in."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CERTCTL_", "PROMETHEUS_")) and k not in ("GUNICORN_CMD_ARGS", "PYTHONPATH")}
    env.update({
        "PYTHONPATH": str(ROOT), "CERTCTL_DATABASE_URL": database_url, "CERTCTL_BROKER_URL": broker_url,
        "CERTCTL_WEBHOOK_URL": receiver_url, "CERTCTL_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "CERTCTL_OUTBOUND_ALLOW": "127.0.0.1/32", "CERTCTL_API_KEYS": f"bench:{api_key}:admin",
        "CERTCTL_LOG_LEVEL": log_level, "CERTCTL_DATA_DIR": str(tmp / "data"),
        "CERTCTL_WORKER_CONCURRENCY": str(concurrency),
    })
    return env


def start_workers(tmp: Path, env: dict, count: int, log_level: str) -> list[Process]:
    """``count`` × ``certctl-notify worker`` (all three queues), each with its own metrics directory (as
    on its own host: the directory is per host name, and a worker empties it when it starts)."""
    cli = str(Path(sys.executable).with_name("certctl-notify"))
    workers = []
    for n in range(count):
        args = [cli, "worker", "--loglevel", log_level, "--without-gossip", "--without-mingle",
                "--hostname", f"bench-{n}-{os.getpid()}@%h"]
        worker_env = {**env, "CERTCTL_METRICS_DIR": str(tmp / f"metrics-worker-{n}")}
        workers.append(Process(args, worker_env, tmp / f"worker-{n}.log").start())
    return workers


def start_beat(tmp: Path, env: dict, log_level: str) -> Process:
    args = [sys.executable, "-m", "celery", "-A", "workers.app", "beat", "--loglevel", log_level,
            "--schedule", str(tmp / "data" / "celerybeat-schedule")]
    return Process(args, env, tmp / "beat.log").start()


def start_api(tmp: Path, env: dict, workers: int = 2, **overrides: str):
    """gunicorn with api.gunicorn_conf (``workers`` processes), exactly ``env`` plus ``overrides``."""
    from tests.support.api_server import GunicornProcess

    env = {**env, "CERTCTL_METRICS_DIR": str(tmp / "metrics-api"), **overrides}
    server = GunicornProcess(env, tmp / "gunicorn.log", workers=workers)
    server.env = env
    return server.start(timeout=60)


def percentiles(values: list[float]) -> dict:
    from bench.chaos import percentile

    return {"p50": percentile(values, 0.5), "p95": percentile(values, 0.95), "max": max(values, default=None)}


class CpuMeter:
    """CPU seconds per component between snapshots: every process of the run, PostgreSQL, Redis, and
    all cores busy (so what ran elsewhere on the machine shows)."""

    def __init__(self, groups):
        self.groups = groups  #: () -> {name: [psutil.Process]}

    def snapshot(self) -> dict:
        return {"cpu": cpu_by_pid(self.groups()), "busy": system_busy(), "at": time.monotonic()}

    @staticmethod
    def cores(before: dict, after: dict) -> dict[str, float]:
        """Cores each component kept busy on average (CPU seconds / wall seconds); ``elsewhere`` is the rest."""
        seconds = after["at"] - before["at"]
        used = {k: v / seconds for k, v in cpu_used(before["cpu"], after["cpu"]).items()}
        used["elsewhere"] = max(0.0, (after["busy"] - before["busy"]) / seconds - sum(used.values()))
        return used


class ServiceStack:
    """The service a bench runs and breaks down: its own database and Redis db, a receiver, workers,
    beat and gunicorn, under a temporary directory; `logs`, `cleanup` and `check_alive` for all of them."""

    def __init__(self, args, owner: str, prefix: str):
        self.args = args
        self.failed = False
        self.db = ScratchDatabase()
        self.redis = ScratchRedisDb(owner, seconds=args.max_seconds + 300)
        self.tmp = Path(tempfile.mkdtemp(prefix=prefix))
        self.api_key = uuid.uuid4().hex
        self.receiver: ReceiverProcess | None = None
        self.workers: list[Process] = []
        self.beat: Process | None = None
        self.api = None
        self.engine = None

    def logs(self):
        out = [(p.log_path.name, p.log_tail()) for p in (*self.workers, self.beat) if p is not None]
        return out + ([("gunicorn.log", self.api.log()[-4000:])] if self.api else [])

    def cleanup_first(self) -> list:
        """Clean-up steps of the bench's own, run before the service is stopped."""
        return []

    def cleanup(self) -> None:
        run_cleanup([
            *self.cleanup_first(),
            ("stop gunicorn", lambda: self.api and self.api.stop()),
            ("stop beat", lambda: self.beat and self.beat.stop()),
            ("stop workers", lambda: [w.stop() for w in self.workers]),
            ("stop receiver", lambda: self.receiver and self.receiver.stop()),
            ("dispose engine", lambda: self.engine and self.engine.dispose()),
            (f"delete the keys of Redis db {self.redis.db}", self.redis.release),
            ("drop database", self.db.drop),
        ])
        if self.failed or self.args.keep_logs:
            print(f"logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def check_alive(self) -> None:
        for process in (*self.workers, self.beat):
            process.check_alive()
        if self.api.proc.poll() is not None:
            raise BenchError(f"gunicorn exited with {self.api.proc.returncode}:\n{self.api.log()[-3000:]}")


class Bench(ServiceStack):
    def __init__(self, args):
        super().__init__(args, "bench/bulk_requeue.py", "certctl-bench-bulk-")
        self.env: dict = {}
        self.results: dict = {}

    # -- set-up and clean-up --

    def setup(self) -> None:
        from sqlalchemy import create_engine

        self.db.create()
        self.redis.claim()
        self.engine = create_engine(self.db.url, pool_size=2)
        fill = self.fill()
        self.receiver = ReceiverProcess(WEBHOOK_SECRET)
        (self.tmp / "data").mkdir()
        self.env = base_env(self.tmp, self.db.url, self.redis.url, self.receiver.url, self.api_key,
                            self.args.log_level, self.args.concurrency)
        self.workers = start_workers(self.tmp, self.env, self.args.workers, self.args.log_level)
        self.beat = start_beat(self.tmp, self.env, self.args.log_level)
        self.api = start_api(self.tmp, self.env, CERTCTL_REQUEUE_RATE="0")
        warm = self.warm_up()
        print(f"set-up: {os.cpu_count()} cores; database {self.db.name}: {fill['rows']:,} dead Webhook rows "
              f"(+1 failed attempt each) in {fill['seconds']:.1f} s; Redis db {self.redis.db}; receiver "
              f"{self.receiver.url}; API gunicorn (2 workers); {self.args.workers} × certctl-notify worker "
              f"(prefork, concurrency {self.args.concurrency}) + beat; {warm} warm-up alerts delivered", flush=True)

    def fill(self) -> dict:
        """``--rows`` + ``--throttled-rows`` dead rows in creation order, made Webhook rows; the first row of the
        second set is the boundary between the jobs' filters (``created_before`` / ``created_after``)."""
        from sqlalchemy import text

        from certctl_notify import store

        rows = self.args.rows + self.args.throttled_rows
        started = time.monotonic()
        raw = self.engine.raw_connection()
        try:
            raw.autocommit = True
            with raw.cursor() as cur:
                seed.fill(cur, rows, mix=DEAD_ONLY, tag="bulk:", attempts="last each", audit_rows=0, ordered=True,
                          rebuild_indexes=True)
                # seed.fill mixes six channels: a webhook receiver's outage left these dead letters; and it puts
                # the newest rows' last change up to 5 minutes ahead, where a job would skip them as changed
                cur.execute("UPDATE notification_events SET channel = 'Webhook', recipient = '', "
                            "updated_at = least(updated_at, now())")
                cur.execute("UPDATE notification_attempts SET channel = 'Webhook'")
                cur.execute("VACUUM (ANALYZE) notification_events, notification_attempts")
        finally:
            raw.close()
        with self.engine.begin() as conn:
            store.fold_deltas(conn)
            self.boundary = conn.execute(text(
                "SELECT created_at FROM notification_events ORDER BY created_at OFFSET :n LIMIT 1"),
                {"n": self.args.rows}).scalar_one()
        return {"rows": rows, "seconds": time.monotonic() - started}

    def warm_up(self) -> int:
        """A few alerts through the API until sent: every process is up, imported and connected."""
        from sqlalchemy import text

        n = 2 * self.args.workers * self.args.concurrency
        for i in range(n):
            self.post("/api/v1/notifications", {"type": "RenewalSuccess", "channel": "Webhook",
                                                "message": f"warm-up {i}", "certificate_id": f"warmup-{i}"}, 202)
        self.wait(lambda: self.scalar(text("SELECT count(*) FROM notification_events WHERE certificate_id LIKE "
                                           "'warmup-%' AND status = 'sent'")) >= n, 90, "the warm-up alerts")
        return n

    # -- helpers --

    def post(self, path: str, body: dict, expect: int) -> dict:
        response = httpx.post(f"{self.api.url}{path}", json=body, timeout=30,
                              headers={"authorization": f"Bearer {self.api_key}"})
        if response.status_code != expect:
            raise BenchError(f"POST {path}: HTTP {response.status_code} {response.text[:300]}")
        return response.json()

    def job(self, job_id: str) -> dict:
        response = httpx.get(f"{self.api.url}/api/v1/requeue-jobs/{job_id}", timeout=30,
                             headers={"authorization": f"Bearer {self.api_key}"})
        response.raise_for_status()
        return response.json()

    def scalar(self, statement, params=None):
        with self.engine.connect() as conn:
            return conn.execute(statement, params or {}).scalar_one()

    def wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            self.check_alive()
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
            time.sleep(POLL_SECONDS)

    def groups(self) -> dict[str, list]:
        import psutil

        services = service_processes(self.db.name)
        trees = [w.processes() for w in self.workers]
        return {
            "worker main": [t[0] for t in trees if t], "worker pool": [p for t in trees for p in t[1:]],
            "beat": self.beat.processes(), "gunicorn": process_tree(self.api.proc),
            "receiver": [psutil.Process(self.receiver.proc.pid)], "bench": [psutil.Process()],
            "postgres (bench db)": services["bench db"], "postgres (rest)": services["background"],
            "redis": services["redis"],
        }

    # -- a job --

    def run_job(self, label: str, where: str, body: dict, rate: float) -> dict:
        """Start a bulk requeue through the API, follow it until it is done and every row it matched is
        sent; returns its figures."""
        import redis as redis_lib
        from sqlalchemy import text

        from certctl_notify.publish import DELIVERY_QUEUE

        broker = redis_lib.Redis.from_url(self.redis.url)
        meter = CpuMeter(self.groups)
        rows = self.scalar(text(f"SELECT count(*) FROM notification_events e WHERE {where} AND status = 'dead'"),
                           {"b": self.boundary})
        print(f"{label}: bulk requeue of {rows:,} dead Webhook rows, CERTCTL_REQUEUE_RATE="
              f"{rate:g}{' (unthrottled)' if rate == 0 else ''} …", flush=True)
        before, hits_before = meter.snapshot(), self.receiver.count()
        started = time.monotonic()
        answer = self.post("/api/v1/notifications/requeue", body, 202)
        job_id, job, job_done_at, job_cpu = answer["job_id"], None, None, None
        queue_max, next_progress = 0, started + 10
        counts = text(f"SELECT count(*) FILTER (WHERE status IN ('pending', 'failed')), count(*) FILTER "
                      f"(WHERE status = 'sent') FROM notification_events e WHERE {where}")
        while True:
            self.check_alive()
            now = time.monotonic()
            if job_done_at is None:
                job = self.job(job_id)
                if job["status"] != "running":
                    job_done_at, job_cpu = now, meter.snapshot()
            with self.engine.connect() as conn:
                unsent, sent = conn.execute(counts, {"b": self.boundary}).one()
            queue_max = max(queue_max, broker.llen(DELIVERY_QUEUE))
            if job_done_at is not None and unsent == 0:  # every row the job requeued is sent (or dead)
                break
            if now > started + self.args.timeout:
                raise BenchError(f"{label}: not every row sent within --timeout={self.args.timeout:g} s")
            if now >= next_progress:
                print(f"  [{now - started:6.1f} s] job {job['status']} requeued {job['requeued']:,}/"
                      f"{job['matched']:,}; rows pending {unsent:,}, sent {sent:,}; deliver queue "
                      f"{broker.llen(DELIVERY_QUEUE):,}; receiver {self.receiver.count() - hits_before:,}",
                      flush=True)
                next_progress += 10
            time.sleep(POLL_SECONDS)
        all_sent_at, after = time.monotonic(), meter.snapshot()
        broker.close()
        if job["status"] != "done":
            raise BenchError(f"{label}: job {job_id} ended {job['status']}")
        result = {"label": label, "rate_setting": rate, "rows": rows, "job": job,
                  "wall_s": all_sent_at - started, "deliver_queue_max": queue_max,
                  "cores_job": CpuMeter.cores(before, job_cpu), "cores_all": CpuMeter.cores(before, after)}
        result.update(self.row_figures(where, job))
        return result

    def row_figures(self, where: str, job: dict) -> dict:
        """From the rows and attempts themselves: the job's and delivery's rates, requeue → sent per row."""
        from datetime import datetime

        from sqlalchemy import text

        created = datetime.fromisoformat(job["created_at"])
        finished = datetime.fromisoformat(job["finished_at"])
        with self.engine.connect() as conn:
            r = conn.execute(text(f"""
                SELECT count(*) AS rows, count(*) FILTER (WHERE status = 'sent') AS sent,
                       max(sent_at) AS last_sent, min(dispatched_at) AS first_requeued,
                       max(dispatched_at) AS last_requeued,
                       count(*) FILTER (WHERE dispatched_at > :finished) AS redispatched,
                       percentile_disc(0.1) WITHIN GROUP (ORDER BY sent_at) AS sent_10,
                       percentile_disc(0.9) WITHIN GROUP (ORDER BY sent_at) AS sent_90,
                       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - dispatched_at)) AS p50,
                       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM sent_at - dispatched_at)) AS p95,
                       max(extract(epoch FROM sent_at - dispatched_at)) AS max
                  FROM notification_events e WHERE {where}"""),
                             {"b": self.boundary, "finished": finished}).mappings().one()
            a = conn.execute(text(f"""
                SELECT count(*) AS attempts, count(DISTINCT a.notification_id) AS attempted,
                       count(*) FILTER (WHERE a.outcome = 'sent') AS sent_attempts
                  FROM notification_attempts a JOIN notification_events e ON e.id = a.notification_id
                 WHERE a.started_at >= :created AND {where}"""),
                {"b": self.boundary, "created": created}).mappings().one()
            ids = set(conn.execute(text(f"SELECT id FROM notification_events e WHERE {where}"),
                                   {"b": self.boundary}).scalars())
        job_s = (finished - created).total_seconds()
        deliver_s = (r["last_sent"] - created).total_seconds()
        return {
            "job_s": job_s, "job_rows_per_s": job["requeued"] / job_s,
            "deliver_s": deliver_s, "deliveries_per_s": r["sent"] / deliver_s,
            "steady_deliveries_per_s": 0.8 * r["sent"] / max(1e-9, (r["sent_90"] - r["sent_10"]).total_seconds()),
            "requeue_to_sent_s": {k: float(r[k]) for k in ("p50", "p95", "max")},
            "requeue_span_s": (r["last_requeued"] - r["first_requeued"]).total_seconds(),
            "redispatched_by_sweep": r["redispatched"], "attempts": dict(a), "ids": ids,
        }

    # -- the run --

    def run(self) -> None:
        self.setup()
        b = self.boundary.isoformat()
        job1 = self.run_job("job 1", f"{SEEDED} AND e.created_at < :b",
                            {"status": "dead", "channel": "Webhook", "created_before": b}, 0)
        self.api.stop()
        rate = self.args.throttled_rate
        self.api = start_api(self.tmp, self.env, CERTCTL_REQUEUE_RATE=str(rate))
        job2 = self.run_job("job 2", f"{SEEDED} AND e.created_at >= :b",
                            {"status": "dead", "channel": "Webhook", "created_after": b}, rate)
        records = self.receiver.records()
        for job in (job1, job2):
            job["receiver"] = self.receiver_figures(records, job.pop("ids"))
            self.print_job(job)
        held, free = job2["job_rows_per_s"], job1["job_rows_per_s"]
        print(f"\nrate limit: job 2 ran at {held:,.0f} rows/s = {held / rate:.0%} of CERTCTL_REQUEUE_RATE={rate}; "
              f"unthrottled, job 1 reached {free:,.0f} rows/s on this machine"
              + (" (below the limit: here the limit does not bind)" if free < rate else ""), flush=True)
        figures = {job["label"].replace(" ", ""): self.summary(job) for job in (job1, job2)}
        figures.update(rows=self.args.rows, throttled_rows=self.args.throttled_rows, workers=self.args.workers,
                       concurrency=self.args.concurrency, cores=os.cpu_count())
        print(json.dumps(figures), flush=True)

    @staticmethod
    def receiver_figures(records: list, ids: set[str]) -> dict:
        """Requests per notification id of the job's rows: each must have exactly one 2xx."""
        ok = Counter(r.notification_id for r in records if r.notification_id in ids and 200 <= r.status < 300)
        hooks: dict[str, set] = {}
        for r in records:
            if r.notification_id in ids:
                hooks.setdefault(r.notification_id, set()).add(r.webhook_id)
        return {
            "requests": sum(1 for r in records if r.notification_id in ids), "delivered_ids": len(ok),
            "twice_or_more": sum(1 for n in ok.values() if n > 1), "never": len(ids - ok.keys()),
            "webhook_id_is_id": all(h == {i} for i, h in hooks.items()),
            "bad_signatures": sum(1 for r in records if r.notification_id in ids and not r.signature_ok),
        }

    @staticmethod
    def summary(job: dict) -> dict:
        keep = ("rows", "rate_setting", "job_s", "job_rows_per_s", "deliver_s", "deliveries_per_s",
                "steady_deliveries_per_s", "requeue_span_s", "redispatched_by_sweep", "deliver_queue_max", "wall_s")
        out = {k: round(job[k], 3) if isinstance(job[k], float) else job[k] for k in keep}
        out.update({k: job["job"][k] for k in ("matched", "requeued", "skipped")})
        out["requeue_to_sent_s"] = {k: round(v, 3) for k, v in job["requeue_to_sent_s"].items()}
        out["receiver"] = job["receiver"]
        out["cores_all"] = {k: round(v, 2) for k, v in job["cores_all"].items()}
        return out

    @staticmethod
    def print_job(r: dict) -> None:
        job, rec, lat = r["job"], r["receiver"], r["requeue_to_sent_s"]
        rate = "unthrottled" if r["rate_setting"] == 0 else f"CERTCTL_REQUEUE_RATE={r['rate_setting']:g}"
        print(f"\n{r['label']} ({rate}), {r['rows']:,} dead rows:")
        print(f"  job            : matched {job['matched']:,}, requeued {job['requeued']:,}, skipped "
              f"{job['skipped']:,} in {r['job_s']:.2f} s (created_at → finished_at) = {r['job_rows_per_s']:,.0f} "
              f"rows/s; rows stamped over {r['requeue_span_s']:.2f} s")
        print(f"  delivery       : every row sent {r['deliver_s']:.1f} s after the job was created = "
              f"{r['deliveries_per_s']:,.0f} deliveries/s (10 %→90 % of the rows: "
              f"{r['steady_deliveries_per_s']:,.0f}/s); "
              f"deliver queue peaked at {r['deliver_queue_max']:,} messages")
        print(f"  requeue → sent : p50 {lat['p50']:.1f} s, p95 {lat['p95']:.1f} s, max {lat['max']:.1f} s per row; "
              f"{r['redispatched_by_sweep']:,} rows re-dispatched by the sweep")
        print(f"  attempts       : {r['attempts']['attempts']:,} made on {r['attempts']['attempted']:,} rows, "
              f"{r['attempts']['sent_attempts']:,} sent")
        print(f"  receiver       : {rec['requests']:,} requests, {rec['delivered_ids']:,} ids delivered, "
              f"{rec['twice_or_more']} delivered twice or more, {rec['never']} never; webhook-id = notification "
              f"id on every request: {rec['webhook_id_is_id']}; bad signatures {rec['bad_signatures']}")
        for title, cores in (("while the job ran", r["cores_job"]), ("until all sent", r["cores_all"])):
            parts = ", ".join(f"{k} {v:.2f}" for k, v in cores.items())
            print(f"  cores busy, {title}: {parts} (total {sum(cores.values()):.2f})")
        sys.stdout.flush()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="dead rows of job 1, unthrottled")
    parser.add_argument("--throttled-rows", type=int, help="dead rows of job 2 (default: a tenth of --rows)")
    parser.add_argument("--workers", type=int, default=2, help="certctl-notify worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool size of each worker")
    parser.add_argument("--throttled-rate", type=int, default=2000, help="CERTCTL_REQUEUE_RATE of job 2")
    parser.add_argument("--log-level", default="WARNING", help="log level of workers and beat")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds each job may take until all sent")
    parser.add_argument("--max-seconds", type=int, default=3600, help="hard limit for the whole run")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs (kept anyway on failure)")
    args = parser.parse_args(argv)
    args.throttled_rows = args.rows // 10 if args.throttled_rows is None else args.throttled_rows
    if args.rows < 10 or min(args.throttled_rows, args.workers, args.concurrency, args.throttled_rate) < 1:
        parser.error("--rows must be at least 10; --throttled-rows, --workers, --concurrency and --throttled-rate "
                     "at least 1")
    return run_guarded(Bench(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
