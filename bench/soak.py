"""Soak: a steady stream of alerts through the API and Celery, and whether any process, Redis or PostgreSQL
grows while it flows.

    .venv/bin/python -m bench.soak --count 50000 [--rate 300]

It runs the API (gunicorn, ``--api-workers`` 2), ``--workers`` 2 × ``certctl-notify worker`` (prefork,
``--concurrency`` 2) and beat on a throw-away ``certctl_bench_<random>`` database and a free Redis db
(claimed; its keys deleted at the end), against a receiver that answers a seeded ``--fail-rate`` (3 %)
with 503 and the rest 200 at once, so retries happen: on a compressed schedule (``--retry-base`` 2 s, cap
30 s), the first two waits held by the worker as countdowns, the later ones in PostgreSQL for beat to
release. It offers ``--warmup`` alerts and drains, then ``--count`` alerts at ``--rate``/s, alternately
``POST /api/v1/notifications`` and a bare ``send_task("certctl_notify.enqueue")``, and drains again (no
pending or failed row, every acknowledged alert stored, no queued message). It samples at the start
(after the warm-up), the middle (half offered) and the end (drained): the RSS, open files and threads of
every API, worker (main and pool) and beat process; the keys of its Redis db and the largest; PostgreSQL
backends, table sizes and unfolded count deltas; the metrics directories. It prints a table per process
with the change from start to end, the rows and attempts, latency, and what grew; the last line is one
JSON object. ``--max-seconds`` bounds the run; everything it started goes at the end.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.bulk_requeue import (  # noqa: E402
    CpuMeter,
    ServiceStack,
    base_env,
    start_api,
    start_beat,
    start_workers,
)
from bench.chaos import ENQUEUE_TASK, Alert, alert_fields, celery_row_id, percentile  # noqa: E402
from bench.common import (  # noqa: E402
    BenchError,
    ReceiverProcess,
    cpu_used,
    process_tree,
    run_guarded,
    service_processes,
)
from bench.throughput import WEBHOOK_SECRET  # noqa: E402

PREFIX = "soak-"
#: A process "grew" when its RSS rose from start to end by at least this share and this many bytes.
GROWTH_SHARE = 0.05
GROWTH_BYTES = 2 * 2**20
MB = 2**20
#: (main process, its children) of gunicorn and of a Celery worker.
ROLES = {False: ("master", "worker"), True: ("main", "pool")}
#: Unfolded count deltas at the end above this mean beat's folds fall behind (a few are a fold's moment).
DELTAS_BEHIND = 1000
#: Tables whose size is sampled; the delta tables hold what beat has not folded yet.
TABLES = ("notification_events", "notification_attempts", "audit_log", "notification_status_deltas",
          "attempt_hourly_deltas")


class Offer:
    """Alerts at a fixed rate: a scheduler thread hands each, when due, to sender threads; even indexes go by
    ``POST /api/v1/notifications`` (a 202 acknowledges), odd ones by ``send_task`` (returning acknowledges)."""

    def __init__(self, api_port: int, api_key: str, broker_url: str, senders: int, timeout: float):
        from celery import Celery

        self.api_port, self.api_key, self.timeout, self.senders = api_port, api_key, timeout, senders
        self.producer = Celery("bench-soak-producer", broker=broker_url, set_as_current=False)
        self.stopping = threading.Event()

    def send(self, alert: Alert) -> None:
        fields = alert_fields(alert.key)
        if alert.via == "api":
            conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=self.timeout)
            try:
                conn.request("POST", "/api/v1/notifications", body=json.dumps(fields).encode(),
                             headers={"content-type": "application/json", "authorization": f"Bearer {self.api_key}"})
                response = conn.getresponse()
                body = response.read()
                if response.status == 202:
                    alert.acked_at, alert.row_id = time.monotonic(), json.loads(body)["data"][0]["id"]
                else:
                    alert.error = f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                alert.error = type(exc).__name__
            finally:
                conn.close()
        else:
            try:
                self.producer.send_task(ENQUEUE_TASK, kwargs=fields, task_id=alert.task_id)
                alert.acked_at, alert.row_id = time.monotonic(), celery_row_id(alert.task_id)
            except Exception as exc:  # any publish failure: not acknowledged, and counted
                alert.error = type(exc).__name__

    def start(self, alerts: list[Alert], rate: float) -> list[threading.Thread]:
        work: queue.Queue = queue.Queue()
        t0 = time.monotonic()

        def sender():
            while (alert := work.get()) is not None:
                self.send(alert)

        def scheduler():
            for n, alert in enumerate(alerts):
                if self.stopping.wait(max(0.0, t0 + n / rate - time.monotonic())):
                    break
                alert.offered_at = time.monotonic()
                work.put(alert)
            for _ in range(self.senders):
                work.put(None)

        threads = [threading.Thread(target=sender, name=f"sender-{n}", daemon=True) for n in range(self.senders)]
        threads.append(threading.Thread(target=scheduler, name="scheduler", daemon=True))
        for thread in threads:
            thread.start()
        return threads

    def close(self) -> None:
        self.stopping.set()
        self.producer.close()


def make_alerts(start: int, count: int) -> list[Alert]:
    return [Alert(i, f"{PREFIX}{i:07d}", "api" if i % 2 == 0 else "celery",
                  task_id=None if i % 2 == 0 else str(uuid.uuid4())) for i in range(start, start + count)]


class Soak(ServiceStack):
    def __init__(self, args):
        super().__init__(args, "bench/soak.py", "certctl-bench-soak-")
        self.offer: Offer | None = None
        self.t0 = time.monotonic()
        self.trend: list[dict] | None = None  #: a point per progress line of the soak (not the warm-up)

    # -- set-up and clean-up --

    def setup(self) -> None:
        from sqlalchemy import create_engine

        self.db.create()
        self.redis.claim()
        self.engine = create_engine(self.db.url, pool_size=2)
        self.receiver = ReceiverProcess(WEBHOOK_SECRET, fail_rate=self.args.fail_rate, seed=self.args.seed,
                                        failing_prefix=PREFIX)
        (self.tmp / "data").mkdir()
        env = base_env(self.tmp, self.db.url, self.redis.url, self.receiver.url, self.api_key, self.args.log_level,
                       self.args.concurrency)
        base, cap = self.args.retry_base, self.args.retry_cap
        env.update({"CERTCTL_NOTIFICATION_RETRY_BASE": f"{base:g}s", "CERTCTL_NOTIFICATION_RETRY_CAP": f"{cap:g}s",
                    "CERTCTL_RETRY_HOLD_MAX": f"{2.5 * base:g}s", "CERTCTL_RETRY_RELEASE_INTERVAL": "1s"})
        self.workers = start_workers(self.tmp, env, self.args.workers, self.args.log_level)
        self.beat = start_beat(self.tmp, env, self.args.log_level)
        self.api = start_api(self.tmp, env, self.args.api_workers)
        self.offer = Offer(self.api.port, self.api_key, self.redis.url, self.args.senders, self.args.request_timeout)
        print(f"set-up: {os.cpu_count()} cores; database {self.db.name}, Redis db {self.redis.db}; receiver "
              f"{self.receiver.url} (503 to {self.args.fail_rate:.0%}); API gunicorn ({self.args.api_workers} "
              f"workers); {self.args.workers} × certctl-notify worker (prefork, concurrency {self.args.concurrency}) "
              f"+ beat; retries after {base:g}, {2 * base:g} s (held by the worker), then doubling to {cap:g} s "
              f"(in PostgreSQL, released by beat)", flush=True)

    def cleanup_first(self) -> list:
        return [("stop the offer", lambda: self.offer and self.offer.close())]

    # -- watching --

    def processes(self) -> dict[str, list]:
        """Every process of the service by role, main process first."""
        out = {"api": process_tree(self.api.proc), "beat": self.beat.processes()}
        for n, worker in enumerate(self.workers):
            out[f"worker-{n}"] = worker.processes()
        return out

    def cpu_groups(self) -> dict[str, list]:
        import psutil

        services = service_processes(self.db.name)
        groups = dict(self.processes())
        groups.update({"receiver": [psutil.Process(self.receiver.proc.pid)], "bench (offer)": [psutil.Process()],
                       "postgres (bench db)": services["bench db"], "postgres (rest)": services["background"],
                       "redis": services["redis"]})
        return groups

    def counts(self) -> dict[str, int]:
        """Rows per status from the maintained counts (no scan of the table)."""
        from certctl_notify import store

        with self.engine.connect() as conn:
            return store.status_counts_now(conn)

    def queued(self) -> dict[str, int]:
        from certctl_notify.publish import QUEUES

        client = self.redis.client
        return {**{q: client.llen(q) for q in QUEUES}, "unacked": client.hlen("unacked")}

    def line(self, label: str, alerts: list[Alert]) -> None:
        counts, queued = self.counts(), self.queued()
        acked = sum(a.acked_at is not None for a in alerts)
        print(f"  [{time.monotonic() - self.t0:7.1f} s] {label}: offered "
              f"{sum(a.offered_at is not None for a in alerts):,}, acknowledged {acked:,}; rows "
              + ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)
              + "; queued " + ", ".join(f"{k} {v:,}" for k, v in queued.items()), flush=True)
        if self.trend is not None:
            self.trend_point(counts, queued, sum(a.offered_at is not None for a in alerts))

    def trend_groups(self) -> dict[str, list]:
        return {"worker": [p for w in self.workers for p in w.processes()], "api": process_tree(self.api.proc),
                "postgres": service_processes(self.db.name)["bench db"]}

    def trend_point(self, counts: dict, queued: dict, offered: int) -> None:
        """CPU per alert finished (sent or dead) since the last point, by component, and the pool processes'
        mean RSS: a cost or a size that climbs through the soak shows here before it shows anywhere else."""
        snap, finished = self.trend_meter.snapshot(), counts["sent"] + counts["dead"]
        last, last_finished = self.trend_last
        done = finished - last_finished
        used = cpu_used(last["cpu"], snap["cpu"])
        pools = [p for w in self.workers for p in w.processes()[1:]]
        self.trend.append({"at_s": round(snap["at"] - self.offer_started, 1), "offered": offered, "finished": finished,
                           "queue": queued["certctl.deliver"],
                           "ms_per_alert": {k: round(1000 * v / done, 2) if done else None for k, v in used.items()},
                           "pool_rss_mb": round(sum(p.memory_info().rss for p in pools) / len(pools) / MB, 1)})
        self.trend_last = (snap, finished)

    def drain(self, alerts: list[Alert], label: str) -> float:
        """Until every acknowledged alert is a row, none is pending or failed and the intake and delivery
        queues are empty (twice, a second apart); returns the seconds it took."""
        started, calm, next_line = time.monotonic(), 0, time.monotonic() + 10
        acked = sum(a.acked_at is not None for a in alerts) + self.stored_before
        while calm < 2:
            self.check_alive()
            counts = self.counts()
            queued = self.queued()
            # a failed row is a retry held as a countdown or waiting in PostgreSQL; beat's own tasks come and go
            done = (sum(counts.values()) >= acked and counts["pending"] == 0 and counts["failed"] == 0
                    and queued["celery"] == 0 and queued["certctl.deliver"] == 0)
            calm = calm + 1 if done else 0
            if time.monotonic() > started + self.args.drain_timeout:
                raise BenchError(f"{label}: not drained within --drain-timeout={self.args.drain_timeout:g} s")
            if time.monotonic() >= next_line:
                self.line(f"{label}, draining", alerts)
                next_line += 10
            time.sleep(1.0)
        return time.monotonic() - started

    # -- sampling --

    def sample(self, label: str) -> dict:
        import psutil
        from sqlalchemy import text

        procs = {}
        for role, tree in self.processes().items():
            for n, p in enumerate(tree):
                name = role if role == "beat" else f"{role} {ROLES[role.startswith('worker')][n > 0]}"
                try:
                    procs[p.pid] = {"role": name, "rss": p.memory_info().rss, "fds": p.num_fds(),
                                    "threads": p.num_threads()}
                except psutil.NoSuchProcess:
                    pass
        client = self.redis.client
        keys = []
        for key in self.redis.keys():
            kind = client.type(key).decode()
            size = {"list": client.llen, "hash": client.hlen, "zset": client.zcard, "set": client.scard}.get(kind)
            keys.append({"key": key.decode(errors="replace"), "type": kind, "bytes": client.memory_usage(key) or 0,
                         "length": size(key) if size else None})
        keys.sort(key=lambda k: -k["bytes"])
        with self.engine.connect() as conn:
            backends = conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                         " AND pid <> pg_backend_pid()")).scalar_one()
            tables = {t: conn.execute(text(f"SELECT pg_total_relation_size('{t}')")).scalar_one() for t in TABLES}
            deltas = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES[3:]}
            attempts = dict(conn.execute(text("SELECT coalesce(outcome, 'open'), count(*) FROM notification_attempts"
                                              " GROUP BY 1")).all())
        metric_files = [f for d in self.tmp.glob("metrics-*") for f in d.rglob("*") if f.is_file()]
        return {"label": label, "at_s": time.monotonic() - self.t0, "processes": procs, "redis_keys": len(keys),
                "redis_bytes": sum(k["bytes"] for k in keys), "largest_keys": keys[:self.args.top_keys],
                "pg_backends": backends, "table_bytes": tables, "unfolded": deltas, "attempts": attempts,
                "rows": self.counts(), "queued": self.queued(), "metrics_files": len(metric_files),
                "metrics_bytes": sum(f.stat().st_size for f in metric_files)}

    # -- the run --

    def run(self) -> None:
        self.setup()
        warm = make_alerts(0, self.args.warmup)
        self.stored_before = 0
        print(f"warm-up: {len(warm):,} alerts at {self.args.rate:g}/s …", flush=True)
        self.offer_all(warm, "warm-up")
        warm_drain = self.drain(warm, "warm-up")
        self.stored_before = sum(a.acked_at is not None for a in warm)
        start = self.sample("start")
        alerts = make_alerts(self.args.warmup, self.args.count)
        period = self.args.count / self.args.rate
        print(f"soak: {len(alerts):,} alerts at {self.args.rate:g}/s over {period:.0f} s (API and Celery "
              f"alternately) …", flush=True)
        meter = CpuMeter(self.cpu_groups)
        cpu_before = meter.snapshot()
        self.offer_started, self.trend, self.trend_meter = time.monotonic(), [], CpuMeter(self.trend_groups)
        counts = self.counts()
        self.trend_last = (self.trend_meter.snapshot(), counts["sent"] + counts["dead"])
        middle = self.offer_all(alerts, "soak", sample_at=len(alerts) // 2)
        offer_s = time.monotonic() - self.offer_started
        backlog = {**self.counts(), **self.queued()}
        self.line("offer done; draining", alerts)
        drain_s = self.drain(alerts, "soak")
        cores = CpuMeter.cores(cpu_before, meter.snapshot())
        end = self.sample("end")
        self.report(warm_drain, alerts, [start, middle, end], offer_s, drain_s, backlog, cores)

    def offer_all(self, alerts: list[Alert], label: str, sample_at: int | None = None) -> dict | None:
        """Offer ``alerts`` at --rate; with ``sample_at``, sample when that many have been offered."""
        threads = self.offer.start(alerts, self.args.rate)
        sampled, next_line = None, time.monotonic() + 10
        deadline = time.monotonic() + len(alerts) / self.args.rate + self.args.request_timeout + 60
        while any(t.is_alive() for t in threads):
            self.check_alive()
            if sample_at is not None and sampled is None and alerts[sample_at].offered_at is not None:
                sampled = self.sample("middle")
            if time.monotonic() >= next_line:
                self.line(label, alerts)
                next_line += 10
            if time.monotonic() > deadline:
                raise BenchError(f"{label}: the offer did not finish in time (senders too slow for --rate?)")
            time.sleep(0.2)
        return sampled or (self.sample("middle") if sample_at is not None else None)

    # -- the report --

    def report(self, warm_drain: float, alerts: list[Alert], samples: list[dict], offer_s: float, drain_s: float,
               backlog: dict, cores: dict) -> None:
        from sqlalchemy import text

        start, middle, end = samples
        acked = [a for a in alerts if a.acked_at is not None]
        records = self.receiver.records()
        ok: dict[str, float] = {}
        twice = Counter()
        for r in records:
            if 200 <= r.status < 300 and str(r.key or "").startswith(PREFIX):
                twice[r.notification_id] += 1
                ok.setdefault(r.notification_id, r.at)
        latency = [ok[a.row_id] - a.acked_at for a in acked if a.row_id in ok]
        with self.engine.connect() as conn:
            retried = conn.execute(text("SELECT count(*) FROM (SELECT notification_id FROM notification_attempts "
                                        "GROUP BY 1 HAVING count(*) > 1) r")).scalar_one()
        args = self.args
        print(f"\nsoak of {len(alerts):,} alerts at {args.rate:g}/s: offered in {offer_s:.1f} s "
              f"({len(alerts) / offer_s:,.0f}/s), drained {drain_s:.1f} s later (warm-up of {args.warmup:,} "
              f"drained in {warm_drain:.1f} s); start sampled at {start['at_s']:.0f} s, middle at "
              f"{middle['at_s']:.0f} s, end at {end['at_s']:.0f} s")
        print(f"  acknowledged   : API {sum(a.via == 'api' for a in acked):,}, Celery "
              f"{sum(a.via == 'celery' for a in acked):,}; not acknowledged "
              f"{dict(Counter(f'{a.via}: {a.error}' for a in alerts if a.acked_at is None)) or 0}")
        print(f"  rows           : {', '.join(f'{k} {v:,}' for k, v in end['rows'].items() if v)} (warm-up included)")
        print(f"  attempts       : {', '.join(f'{k} {v:,}' for k, v in end['attempts'].items())}; rows attempted "
              f"more than once {retried:,}; receiver {len(records):,} requests "
              f"({sum(r.status == 503 for r in records):,} answered 503), "
              f"{sum(1 for n in twice.values() if n > 1)} ids delivered twice or more, bad signatures "
              f"{sum(not r.signature_ok for r in records)}")
        print(f"  acknowledged → first 200: p50 {percentile(latency, 0.5):.2f} s, "
              f"p95 {percentile(latency, 0.95):.2f} s, max {max(latency):.2f} s ({len(latency):,} alerts)")
        if len(alerts) / offer_s < 0.95 * args.rate:
            print(f"  note           : the offer kept only {len(alerts) / offer_s:,.0f}/s of --rate {args.rate:g}/s "
                  "(the API answered too slowly for --senders): the service's pace, not the one asked for")
        print(f"  backlog when the offer ended: pending {backlog['pending']:,}, failed {backlog['failed']:,}, "
              f"queued " + ", ".join(f"{q} {backlog[q]:,}" for q in ('celery', 'certctl.deliver', 'certctl.control',
                                                                      'unacked')))
        print("  cores busy (offer + drain): " + ", ".join(f"{k} {v:.2f}" for k, v in cores.items()))
        self.print_trend()
        grew = self.print_processes(samples)
        grew += self.print_state(samples)
        print("  grew           : " + ("; ".join(grew) if grew else "nothing (a process: RSS +5 % and +2 MB, or "
                                       "more open files; Redis keys or bytes, backends, metrics files: any rise)"))
        figures = {"count": len(alerts), "rate": args.rate, "offer_s": round(offer_s, 1), "drain_s": round(drain_s, 1),
                   "latency_p50_s": percentile(latency, 0.5), "latency_p95_s": percentile(latency, 0.95),
                   "rows": end["rows"], "attempts": end["attempts"], "retried_rows": retried,
                   "duplicates": sum(1 for n in twice.values() if n > 1),
                   "rss": {f"{p['role']} {pid}": [s["processes"].get(pid, {}).get("rss") for s in samples]
                           for pid, p in start["processes"].items()},
                   "redis_keys": [s["redis_keys"] for s in samples], "grew": grew, "trend": self.trend}
        print(json.dumps(figures), flush=True)

    def print_trend(self) -> None:
        points = self.trend[::max(1, len(self.trend) // 10)]
        if points[-1] is not self.trend[-1]:
            points.append(self.trend[-1])
        print("  trend          :     s  offered  finished   queued   CPU ms per alert finished: worker    api  "
              "postgres   pool RSS (mean)")
        for p in points:
            ms = {k: "—" if v is None else f"{v:.2f}" for k, v in p["ms_per_alert"].items()}
            print(f"                  {p['at_s']:6.0f} {p['offered']:8,} {p['finished']:9,} {p['queue']:8,}"
                  f"{ms['worker']:>34} {ms['api']:>6} {ms['postgres']:>9} {p['pool_rss_mb']:>10.1f} MB")

    @staticmethod
    def print_processes(samples: list[dict]) -> list[str]:
        start, middle, end = samples
        grew = []
        print(f"  {'process':<18} {'pid':>7} {'RSS start':>10} {'middle':>9} {'end':>9} {'change':>8}  "
              f"{'open files':>12}  {'threads':>9}")
        for pid in sorted({*start["processes"], *end["processes"]},
                          key=lambda p: (start["processes"].get(p) or end["processes"][p])["role"]):
            s, m, e = (x["processes"].get(pid) for x in samples)
            role = (s or e)["role"]

            def mb(x):
                return f"{x['rss'] / MB:.1f} MB" if x else "—"

            change = f"{(e['rss'] - s['rss']) / s['rss']:+.1%}" if s and e else "new" if e else "gone"
            fds = f"{s['fds'] if s else '—'} → {e['fds'] if e else '—'}"
            threads = f"{s['threads'] if s else '—'} → {e['threads'] if e else '—'}"
            print(f"  {role:<18} {pid:>7} {mb(s):>10} {mb(m):>9} {mb(e):>9} {change:>8}  {fds:>12}  {threads:>9}")
            if s and e and e["rss"] - s["rss"] >= max(GROWTH_BYTES, GROWTH_SHARE * s["rss"]):
                grew.append(f"{role} {pid} RSS {s['rss'] / MB:.1f} → {e['rss'] / MB:.1f} MB")
            if s and e and e["fds"] > s["fds"]:
                grew.append(f"{role} {pid} open files {s['fds']} → {e['fds']}")
            if not (s and e):
                grew.append(f"{role} {pid} {'started' if e else 'exited'} during the soak")
        return grew

    @staticmethod
    def print_state(samples: list[dict]) -> list[str]:
        start, middle, end = samples
        grew = []
        print("  Redis db       : keys " + " / ".join(f"{s['redis_keys']}" for s in samples)
              + " (start / middle / end, the claim left out), bytes "
              + " / ".join(f"{s['redis_bytes']:,}" for s in samples))
        for s in samples:
            print(f"    largest at {s['label']:<6}: " + ", ".join(
                f"{k['key']} ({k['type']}{'' if k['length'] is None else ' ' + format(k['length'], ',')}, "
                f"{k['bytes']:,} B)" for k in s["largest_keys"]))
        print("  PostgreSQL     : backends " + " / ".join(str(s["pg_backends"]) for s in samples)
              + "; unfolded deltas " + " / ".join(str(sum(s["unfolded"].values())) for s in samples)
              + "; MB " + ", ".join(f"{t} " + " / ".join(f"{s['table_bytes'][t] / MB:.1f}" for s in samples)
                                    for t in TABLES[:2]))
        print("  metrics dirs   : files " + " / ".join(str(s["metrics_files"]) for s in samples)
              + ", bytes " + " / ".join(f"{s['metrics_bytes']:,}" for s in samples))
        for name, values in (("Redis keys", [s["redis_keys"] for s in samples]),
                             ("Redis bytes", [s["redis_bytes"] for s in samples]),
                             ("PostgreSQL backends", [s["pg_backends"] for s in samples]),
                             ("metrics files", [s["metrics_files"] for s in samples]),
                             ("metrics bytes", [s["metrics_bytes"] for s in samples])):
            if values[-1] > values[0]:
                grew.append(f"{name} {values[0]:,} → {values[-1]:,}")
        if sum(end["unfolded"].values()) > DELTAS_BEHIND:
            grew.append(f"unfolded count deltas {sum(end['unfolded'].values()):,} at the end (beat's folds behind)")
        return grew


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=50_000, help="alerts offered after the warm-up")
    parser.add_argument("--rate", type=float, default=300, help="alerts offered per second")
    parser.add_argument("--warmup", type=int, default=1000, help="alerts offered and drained before the start sample")
    parser.add_argument("--fail-rate", type=float, default=0.03, help="share of requests the receiver answers 503")
    parser.add_argument("--seed", type=int, default=1, help="seed of the receiver's 503s")
    parser.add_argument("--retry-base", type=float, default=2, help="CERTCTL_NOTIFICATION_RETRY_BASE, s")
    parser.add_argument("--retry-cap", type=float, default=30, help="CERTCTL_NOTIFICATION_RETRY_CAP, s")
    parser.add_argument("--workers", type=int, default=2, help="certctl-notify worker processes")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool size of each worker")
    parser.add_argument("--api-workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--senders", type=int, default=8, help="threads offering alerts")
    parser.add_argument("--request-timeout", type=float, default=10, help="timeout of one POST, s")
    parser.add_argument("--top-keys", type=int, default=5, help="largest Redis keys shown per sample")
    parser.add_argument("--log-level", default="WARNING", help="log level of workers and beat")
    parser.add_argument("--drain-timeout", type=float, default=600, help="seconds a drain may take")
    parser.add_argument("--max-seconds", type=int, default=1800, help="hard limit for the whole run")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs (kept anyway on failure)")
    args = parser.parse_args(argv)
    if args.count < 2 or args.rate <= 0 or args.warmup < 1 or not 0 <= args.fail_rate < 1:
        parser.error("--count ≥ 2, --rate > 0, --warmup ≥ 1 and 0 ≤ --fail-rate < 1")
    return run_guarded(Soak(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
