#!/usr/bin/env python
"""Chaos: alerts offered through the API and Celery while every piece is killed, then what was lost.

    .venv/bin/python bench/chaos.py [--count 10000 --rate 55 --kill-every 10 --kill-race-tries 40]

It starts everything it breaks itself, on 127.0.0.1, and never touches the machine's shared services:
its own Redis (``redis-server --save ''``: no persistence), its own PostgreSQL cluster (``initdb`` in a
temporary directory, run as the ``postgres`` user when we are root), a webhook receiver that answers
503 to a seeded ``--fail-rate`` of requests and checks every Standard Webhooks signature, two
``celery -A workers.app worker`` (prefork, concurrency 2), one beat and one gunicorn API (2 workers).
Every process runs the code of the checkout this file is in (cwd and PYTHONPATH at its root).

Phase 1, chaos: ``--count`` Webhook alerts at ``--rate``/s, alternately ``POST /api/v1/notifications``
(a 202 acknowledges) and a bare ``Celery(broker=URL).send_task("certctl_notify.enqueue")`` (returning
acknowledges). Meanwhile a worker's main process is SIGKILLed every ``--kill-every`` s (alternately,
restarted at once), and once each: a gunicorn worker is SIGKILLed, Redis is FLUSHALLed, PostgreSQL is
restarted (``pg_ctl restart -m fast``), beat is SIGKILLed and restarted, Redis is SIGKILLed and
restarted empty. Then it waits (``--drain-timeout``) until no row is pending or failed and the broker
holds no alert's message.

Phase 2, kill race (``--kill-race-tries``): each try starts a fresh single worker (nothing else
consumes), waits until it blocks on Redis (BRPOP, or an intake relay's BLMOVE), sends one alert to
``certctl_notify.enqueue`` and SIGKILLs the worker's main process 0-5 ms later
(``--kill-race-max-delay-ms``); then one healthy worker (and beat) must store and deliver every alert.

It prints the figures (lost, lost with the broker's data, duplicates, sent without a 2xx, dead rows,
latency, deliveries that found nothing to claim, signatures, the kill race) and, last, one JSON line
with the same figures. Processes, clusters and temporary directories are removed at the end, after a
failure or Ctrl-C too (logs are kept on failure or with ``--keep-logs``).
"""

from __future__ import annotations

import argparse
import ast
import base64
import collections
import contextlib
import http.client
import json
import os
import queue
import random
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import BenchError, process_tree, run_cleanup, run_guarded  # noqa: E402

#: The Standard Webhooks secret the workers sign with and the receiver checks.
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"certctl-chaos-webhook-secret-01").decode()
#: Task names and queues as the product names them (certctl_notify/publish.py).
ENQUEUE_TASK = "certctl_notify.enqueue"
DELIVER_TASK = "certctl_notify.deliver"
#: The queue ``send_task("certctl_notify.enqueue")`` pushes to (Celery's default queue).
INTAKE_QUEUE = "celery"
#: kombu's Redis transport keeps a consumer's unacknowledged messages in this hash.
UNACKED_KEY = "unacked"
#: Every message in any list or hash of a Redis db, as (key, value) pairs, read atomically: whatever the
#: layout (queues, kombu's unacked hash, an intake relay's in-progress lists), nothing held is missed.
ALL_MESSAGES_LUA = """
local out = {}
for _, key in ipairs(redis.call('KEYS', '*')) do
  local kind = redis.call('TYPE', key)['ok']
  local values = {}
  if kind == 'list' then values = redis.call('LRANGE', key, 0, -1)
  elseif kind == 'hash' then values = redis.call('HVALS', key) end
  for _, value in ipairs(values) do
    out[#out + 1] = key
    out[#out + 1] = value
  end
end
return out
"""
#: Namespace of the row ids derived from a Celery intake's task id (certctl_notify/alerts.py).
SOURCE_NAMESPACE = uuid.UUID("3618c635-a616-41cf-a524-a2aac7062353")
CHAOS_PREFIX = "chaos-"
RACE_PREFIX = "race-"
#: The compressed schedule (legal: the worker checks it at start). Waits of 1 and 2 s are held by the
#: worker as countdowns, 4 and 8 s wait in PostgreSQL and beat releases them; a claim waits up to 2 s
#: and an outcome record up to 6 s for PostgreSQL (1/4 and 3/4 of the time limit).
CHAOS_SETTINGS = {
    "CERTCTL_NOTIFICATION_RETRY_BASE": "1s",
    "CERTCTL_NOTIFICATION_RETRY_CAP": "8s",
    "CERTCTL_RETRY_HOLD_MAX": "2s",
    "CERTCTL_RETRY_RELEASE_INTERVAL": "1s",
    "CERTCTL_TASK_TIME_LIMIT": "8s",
    "CERTCTL_CLAIM_LEASE": "10s",
    "CERTCTL_BROKER_VISIBILITY_TIMEOUT": "12s",  # > held wait (2 s) + time limit (8 s)
    "CERTCTL_HTTP_TIMEOUT": "3s",
    "CERTCTL_OUTBOUND_ALLOW": "127.0.0.1/32",
    # Code with an intake relay takes a dead relay's intake back after this (code without ignores it).
    "CERTCTL_INTAKE_CONSUMER_TIMEOUT": "5s",
}
#: The kill race only stores and delivers (the receiver answers its alerts 200): a shorter visibility
#: timeout lets the healthy worker's first look for a dead worker's messages (10 s after it starts)
#: give back every message the killed workers had recorded.
RACE_SETTINGS = {
    "CERTCTL_TASK_TIME_LIMIT": "4s",
    "CERTCTL_CLAIM_LEASE": "5s",
    "CERTCTL_RETRY_HOLD_MAX": "1s",
    "CERTCTL_BROKER_VISIBILITY_TIMEOUT": "6s",  # > held wait (1 s) + time limit (4 s)
}
#: Worker log lines counted at the end (workers log at INFO, see --worker-log-level).
NOTHING_TO_CLAIM = "nothing to claim"
SKIPPED_RESULT = re.compile(r"Task certctl_notify\.deliver\[[^\]]+\] succeeded in [^:]+: 'skipped'")
SWEEP_LINE = re.compile(r"sweep re-dispatched (\d+) rows (\{[^}]*\})")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def celery_row_id(task_id: str, channel: str = "Webhook") -> str:
    """The row id intake derives from the task id of a ``certctl_notify.enqueue`` message."""
    return f"notif_{uuid.uuid5(SOURCE_NAMESPACE, f'{task_id}:{channel}').hex}"


def alert_fields(key: str) -> dict:
    return {"type": "ExpirationWarning", "channel": "Webhook", "severity": "warning",
            "message": f"certificate {key} (www.{key}.example.test) expires in 7 days",
            "certificate_id": key, "dedupe_key": key}


def held_task(raw: bytes | str) -> tuple[str | None, str | None]:
    """(task name, task id) of a message as Redis holds it: the message itself (a queue), or kombu's
    ``[message, exchange, routing key]`` (the ``unacked`` hash); (None, None) for anything else."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None, None
    if isinstance(value, list) and value and isinstance(value[0], dict):
        value = value[0]
    headers = value.get("headers") if isinstance(value, dict) else None
    if not isinstance(headers, dict):
        return None, None
    return headers.get("task"), headers.get("id")


def held_alert_messages(pairs: list) -> list[tuple[str, str, str]]:
    """(key, task name, task id) of every enqueue or delivery message in the flat [key, value, …] reply of
    `ALL_MESSAGES_LUA`."""
    found = []
    for key, value in zip(pairs[::2], pairs[1::2], strict=True):
        name, task_id = held_task(value)
        if name in (ENQUEUE_TASK, DELIVER_TASK):
            found.append((key.decode() if isinstance(key, bytes) else key, name, task_id))
    return found


# --- the services the bench breaks ----------------------------------------------------------------


def pg_program(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not candidates:
        raise BenchError(f"{name} not found (install PostgreSQL's server binaries)")
    return str(candidates[-1])


class Postgres:
    """A PostgreSQL cluster of the bench's own in a temporary directory, on a free port of 127.0.0.1.

    PostgreSQL refuses to run as root, so when we are root every initdb and pg_ctl runs as ``postgres``.
    """

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="certctl-chaos-pg-"))
        self.data, self.sockets, self.log = self.root / "data", self.root / "sockets", self.root / "postgres.log"
        self.port = free_port()
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        self.options = f"-p {self.port} -k {self.sockets} -c listen_addresses=127.0.0.1"

    def _run(self, *args: str, timeout: float = 120) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        result = subprocess.run([*prefix, *args], cwd=self.root, capture_output=True, text=True, timeout=timeout,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise BenchError(f"{Path(args[0]).name} {' '.join(args[1:3])} failed ({result.returncode}): "
                             f"{result.stderr[-1500:]}\n{self.log_tail()}")

    def init(self) -> Postgres:
        self.sockets.mkdir()
        if os.geteuid() == 0:
            for path in (self.root, self.sockets):
                shutil.chown(path, "postgres", "postgres")
        self._run(pg_program("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")
        return self

    def start(self) -> None:
        self._run(pg_program("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", self.options, "start")

    def restart(self) -> None:
        self._run(pg_program("pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-m", "fast", "-o", self.options, "restart")

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        try:
            self._run(pg_program("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "30", "stop")
        except (BenchError, subprocess.TimeoutExpired):
            pid_file = self.data / "postmaster.pid"
            if pid_file.exists():
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            raise

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    """``redis-server`` of the bench's own on a free port of 127.0.0.1, without persistence."""

    def __init__(self, directory: Path, *args: str):
        self.port = free_port()
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}"
        self.args = args  #: more redis-server options (e.g. ``--replicaof HOST PORT``)
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 15) -> RedisServer:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log"), *self.args],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"redis-server exited with {self.proc.returncode}: {self.log_tail()}")
            with contextlib.suppress(redis.RedisError), redis.Redis(port=self.port, socket_timeout=1) as client:
                if client.ping():
                    return self
            if time.monotonic() > deadline:
                raise BenchError(f"redis-server did not answer within {timeout:g} s: {self.log_tail()}")
            time.sleep(0.02)

    def client(self, db: int = 0):
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=10)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def log_tail(self, chars: int = 2000) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""


# --- the webhook receiver ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Received:
    at: float  #: time.monotonic() when it was answered
    notification_id: str | None  #: data.id of the body
    webhook_id: str | None  #: the webhook-id header
    key: str | None  #: data.certificate_id (the alert's dedupe key)
    status: int
    signature_ok: bool


class Receiver:
    """Answers 503 to a seeded ``fail_rate`` of the requests for keys starting with ``failing_prefix``
    and 200 otherwise; verifies every request's Standard Webhooks signature and records each request."""

    def __init__(self, secret: str, fail_rate: float, seed: int, failing_prefix: str):
        from standardwebhooks import Webhook
        from standardwebhooks.webhooks import WebhookVerificationError

        self.requests: list[Received] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        verifier = Webhook(secret)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive: the workers' HTTP clients reuse connections

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                try:
                    verifier.verify(body, headers, json_parse=False)
                    signature_ok = True
                except WebhookVerificationError:
                    signature_ok = False
                try:
                    data = json.loads(body)["data"]
                    notification_id, key = data.get("id"), data.get("certificate_id")
                except (ValueError, KeyError, TypeError, AttributeError):
                    notification_id = key = None
                with receiver._lock:
                    failing = str(key or "").startswith(failing_prefix) and receiver._rng.random() < fail_rate
                status = 503 if failing else 200
                receiver.requests.append(Received(time.monotonic(), notification_id, headers.get("webhook-id"),
                                                  key, status, signature_ok))
                reason = b"Service Unavailable" if failing else b"OK"
                with contextlib.suppress(OSError):  # the worker was killed while we answered
                    self.wfile.write(b"HTTP/1.1 %d %s\r\ncontent-length: 0\r\n\r\n" % (status, reason))

            def log_message(self, *args):
                """Silent."""

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request, client_address):
                """A worker killed in the middle of a request resets its connection: nothing to report."""
                if not isinstance(sys.exc_info()[1], OSError):
                    super().handle_error(request, client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- processes -------------------------------------------------------------------------------------


class Service:
    """A process we start (worker, beat, gunicorn): its own session (Ctrl-C reaches only the bench,
    which cleans up), output appended to its log."""

    def __init__(self, name: str, args: list[str], env: dict, log_path: Path):
        self.name, self.args, self.env, self.log_path = name, args, env, log_path
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0
        self._log = None

    def start(self) -> Service:
        self._log = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def children(self) -> list:
        return process_tree(self.proc)[1:]

    def kill_main(self) -> list:
        """SIGKILL the main process only; returns its children (left to do what they do)."""
        children = self.children()
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)
        self._close()
        return children

    def kill_all(self) -> None:
        for process in reversed(process_tree(self.proc)):
            with contextlib.suppress(Exception):  # gone meanwhile
                process.kill()
        if self.proc is not None:
            self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class ForkServer:
    """``bench/worker_forkserver.py``: forks fresh workers with Celery and our code already imported."""

    def __init__(self, env: dict, log_path: Path):
        self.env, self.log_path = env, log_path
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 60) -> ForkServer:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "worker_forkserver.py")], cwd=ROOT,
                                     env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, start_new_session=True)
        self._read_line(timeout, "start")
        return self

    def _read_line(self, timeout: float, what: str) -> str:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise BenchError(f"the fork server did not {what} within {timeout:g} s:\n"
                             f"{self.log_path.read_text(errors='replace')[-3000:]}")
        return line

    def spawn(self, argv: list[str], env: dict, log_path: Path) -> int:
        self.proc.stdin.write(json.dumps({"argv": argv, "env": env, "log": str(log_path)}) + "\n")
        self.proc.stdin.flush()
        return int(self._read_line(10, "fork a worker"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class RaceWorker:
    pid: int
    log_path: Path
    process: object  #: psutil.Process of the main process
    popen: subprocess.Popen | None = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class CommandLog:
    """Redis MONITOR during the kill race: when (Redis's clock) each LPUSH and HSET of a db reached it, so
    the window between a message leaving the queue (the LPUSH a blocked BRPOP is served at once) and its
    being recorded as unacknowledged (``HSET unacked``) is measured by Redis itself."""

    def __init__(self, server: RedisServer, db: int):
        self.db = db
        self.client = server.client()
        self.commands: list[tuple[float, str, str]] = []  #: (time, LPUSH | HSET, the command's text)
        self._thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)

    def start(self) -> CommandLog:
        self._thread.start()
        return self

    def _run(self) -> None:
        import redis

        try:
            with self.client.monitor() as monitor:
                for command in monitor.listen():
                    name = command["command"].split(" ", 1)[0].upper()
                    if command["db"] == self.db and name in ("LPUSH", "HSET"):
                        self.commands.append((command["time"], name, command["command"]))
        except (redis.RedisError, OSError, ValueError, AttributeError):
            return  # the server went away or the log was closed

    def first(self, name: str, task_id: str, after: float = 0.0) -> float | None:
        return next((t for t, n, text in list(self.commands) if n == name and t >= after and task_id in text), None)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing what may be gone already
            self.client.close()
            self.client.connection_pool.disconnect()


# --- the alerts ---------------------------------------------------------------------------------------


@dataclass
class Alert:
    index: int
    key: str
    via: str  #: "api" or "celery"
    task_id: str | None = None  #: Celery intake: the task id the row id derives from
    offered_at: float | None = None
    acked_at: float | None = None  #: monotonic time of the 202 / of send_task returning
    row_id: str | None = None  #: from the 202, or derived from the task id
    error: str | None = None  #: why it was not acknowledged


@dataclass
class Wipe:
    kind: str  #: "FLUSHALL" or "SIGKILL + empty restart"
    at: float  #: offset in the offer, seconds
    snapshot_at: float  #: monotonic time of the snapshot of what Redis held
    wiped_at: float  #: monotonic time the data was gone
    intake_ids: set[str] = field(default_factory=set)  #: enqueue task ids Redis held (queued or unacked)
    deliveries: int = 0  #: delivery messages Redis held
    slack: float = 0.0  #: how long after the wipe a reply of the wiped server may still be read, seconds

    def held(self, alert: Alert) -> bool:
        """The alert's intake message was in Redis when its data was wiped: in the snapshot, or (a SIGKILL
        comes a moment after its snapshot; a FLUSHALL is in the same MULTI) acknowledged in between."""
        if alert.task_id in self.intake_ids:
            return True
        return alert.acked_at is not None and self.snapshot_at < alert.acked_at <= self.wiped_at + self.slack

    def just_before(self, alert: Alert, window: float) -> bool:
        """Acknowledged within ``window`` s before the snapshot: a message a worker had popped and not yet
        recorded as unacknowledged is in no snapshot, and is lost when Redis dies before it is recorded."""
        return alert.acked_at is not None and self.snapshot_at - window < alert.acked_at <= self.snapshot_at


# --- the bench --------------------------------------------------------------------------------------


class Chaos:
    def __init__(self, args):
        self.args = args
        self.failed = False
        self.tmp = Path(tempfile.mkdtemp(prefix="certctl-chaos-"))
        self.rng = random.Random(args.seed)
        self.api_key = secrets.token_hex(16)
        self.pg: Postgres | None = None
        self.redis: RedisServer | None = None
        self.receiver: Receiver | None = None
        self.engine = None
        self.producer = None
        self.workers: dict[int, Service] = {}
        self.incarnations: dict[int, int] = {}
        self.beat: Service | None = None
        self.api: Service | None = None
        self.api_port = free_port()
        self.orphans: list = []  #: pool processes of killed main processes
        self.forkserver: ForkServer | None = None
        self.race_workers: list[RaceWorker] = []
        self.race_beat: Service | None = None
        self.race_monitor: CommandLog | None = None
        self.events: list[dict] = []
        self.wipes: list[Wipe] = []
        self.unexpected_exits: list[str] = []
        self.unexpected_exit_logs: list[str] = []
        self.t0: float | None = None
        self.stopping = threading.Event()

    # -- environment and processes --

    def env(self, **overrides: str) -> dict:
        """The production environment, compressed, pointed at the bench's services; no CERTCTL_* of ours
        leaks in, and the checkout's root comes first on the path."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CERTCTL_", "PROMETHEUS_")) and k not in ("GUNICORN_CMD_ARGS", "PYTHONPATH")}
        env.update(CHAOS_SETTINGS)
        env.update({
            "PYTHONPATH": str(ROOT),
            "CERTCTL_DATABASE_URL": self.pg.url,
            "CERTCTL_BROKER_URL": f"{self.redis.url}/0",
            "CERTCTL_WEBHOOK_URL": self.receiver.url,
            "CERTCTL_WEBHOOK_SECRET": WEBHOOK_SECRET,
            "CERTCTL_API_KEYS": f"chaos:{self.api_key}:admin",
            "CERTCTL_NOTIFICATION_RETRY_INTERVAL": f"{self.args.sweep_interval:g}s",
            "CERTCTL_SWEEP_GRACE": f"{self.args.sweep_grace:g}s",
            "CERTCTL_LOG_LEVEL": "WARNING",
            "CERTCTL_DATA_DIR": str(self.tmp / "data"),
        })
        env.update(overrides)
        return env

    def worker_args(self, hostname: str, concurrency: int) -> list[str]:
        return [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "prefork",
                "--concurrency", str(concurrency), "--without-gossip", "--without-mingle", "--hostname", hostname]

    def start_worker(self, slot: int) -> Service:
        generation = self.incarnations.get(slot, -1) + 1
        self.incarnations[slot] = generation
        hostname = f"chaos-w{slot}-{generation}-{os.getpid()}@%h"
        worker = Service(f"worker-{slot}", self.worker_args(hostname, 2),
                         self.env(CERTCTL_LOG_LEVEL=self.args.worker_log_level),
                         self.tmp / f"worker-{slot}.log").start()
        self.workers[slot] = worker
        return worker

    def start_beat(self) -> Service:
        self.beat = Service("beat", [sys.executable, "-m", "celery", "-A", "workers.app", "beat"], self.env(),
                            self.tmp / "beat.log").start()
        return self.beat

    def start_api(self) -> Service:
        self.api = Service("gunicorn", [sys.executable, "-m", "gunicorn", "--workers", "2", "--bind",
                                        f"127.0.0.1:{self.api_port}", "--log-level", "warning",
                                        "api.app:create_app()"],
                           self.env(), self.tmp / "gunicorn.log").start()
        return self.api

    def check_code(self) -> None:
        """The bench and every process it starts import this checkout's code, not an installed copy."""
        import certctl_notify

        if not Path(certctl_notify.__file__).resolve().is_relative_to(ROOT):
            raise BenchError(f"the bench imports certctl_notify from {certctl_notify.__file__}, not from {ROOT}")
        probe = ("import json, api.app, certctl_notify, workers.app; "
                 "print(json.dumps([api.app.__file__, certctl_notify.__file__, workers.app.__file__]))")
        result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=self.env(), capture_output=True,
                                text=True, timeout=60)
        if result.returncode != 0:
            raise BenchError(f"importing the code failed: {result.stderr[-2000:]}")
        outside = [p for p in json.loads(result.stdout.strip().splitlines()[-1])
                   if not Path(p).resolve().is_relative_to(ROOT)]
        if outside:
            raise BenchError(f"the started processes would import {outside}, not {ROOT}'s code")

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {"worker-0", "worker-1", "gunicorn"}
        while pending:
            for slot, worker in self.workers.items():
                if not worker.alive():
                    raise BenchError(f"worker-{slot} exited with {worker.proc.returncode}:\n"
                                     f"{worker.log_text()[-3000:]}")
                if " ready." in worker.log_text():
                    pending.discard(f"worker-{slot}")
            for service in (self.beat, self.api):
                if not service.alive():
                    raise BenchError(f"{service.name} exited with {service.proc.returncode}:\n"
                                     f"{service.log_text()[-3000:]}")
            if "gunicorn" in pending and self.api_get("/healthz") == 200:
                pending.discard("gunicorn")
            if time.monotonic() > deadline:
                raise BenchError(f"not ready within {timeout:g} s: {sorted(pending)}")
            time.sleep(0.1)

    def api_get(self, path: str) -> int | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=2)
        try:
            conn.request("GET", path)
            return conn.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    # -- set-up --

    def setup(self) -> None:
        from celery import Celery
        from sqlalchemy import create_engine

        from certctl_notify.migrate import upgrade

        started = time.monotonic()
        self.pg = Postgres()
        self.pg.init().start()
        upgrade(self.pg.url)
        self.engine = create_engine(self.pg.url, pool_pre_ping=True, pool_size=2)
        self.redis = RedisServer(self.tmp / "redis").start()
        self.receiver = Receiver(WEBHOOK_SECRET, self.args.fail_rate, self.args.seed, CHAOS_PREFIX)
        (self.tmp / "data").mkdir()
        self.check_code()
        for slot in (0, 1):
            self.start_worker(slot)
        self.start_beat()
        self.start_api()
        self.wait_ready(self.args.start_timeout)
        # The bare producer of a service that holds only the broker URL.
        self.producer = Celery(broker=f"{self.redis.url}/0", set_as_current=False)
        print(f"set-up: own PostgreSQL on 127.0.0.1:{self.pg.port}, own Redis on 127.0.0.1:{self.redis.port}, "
              f"receiver {self.receiver.url}, API 127.0.0.1:{self.api_port}; 2 workers (prefork, concurrency 2), "
              f"beat, gunicorn (2 workers) ready in {time.monotonic() - started:.1f} s", flush=True)

    # -- phase 1: chaos --

    def schedule(self, period: float) -> list[tuple[float, str, int | None]]:
        """Worker kills every --kill-every s (alternately), and the one-off events spread over the period,
        none closer than a second (or a third of --kill-every) to another."""
        events: list[tuple[float, str, int | None]] = []
        k = 1
        while k * self.args.kill_every < period:
            events.append((k * self.args.kill_every, "kill-worker", (k - 1) % 2))
            k += 1
        one_offs = {"kill-gunicorn-worker": 0.15, "flushall": 0.35, "restart-postgres": 0.55, "kill-beat": 0.75,
                    "kill-redis": 0.95}
        for name, fraction in one_offs.items():
            if name not in self.args.skip:
                events.append((fraction * period, name, None))
        events.sort()
        gap = min(1.0, self.args.kill_every / 3)
        spread: list[tuple[float, str, int | None]] = []
        for at, name, arg in events:
            if spread and at < spread[-1][0] + gap:
                at = spread[-1][0] + gap
            spread.append((at, name, arg))
        return spread

    def note(self, what: str, **detail) -> None:
        at = time.monotonic() - self.t0
        self.events.append({"at_s": round(at, 2), "event": what, **detail})
        extra = ", ".join(f"{k} {v}" for k, v in detail.items())
        print(f"  [{at:7.2f} s] {what}{': ' + extra if extra else ''}", flush=True)

    def do_event(self, name: str, arg: int | None) -> None:
        if name == "kill-worker":
            old = self.workers[arg]
            children = old.kill_main()
            self.orphans.extend(children)
            new = self.start_worker(arg)
            self.note(f"SIGKILL worker-{arg} main process, restarted", pid=old.pid,
                      pool=[c.pid for c in children], new_pid=new.pid)
        elif name == "kill-gunicorn-worker":
            import psutil

            children = psutil.Process(self.api.pid).children()
            if not children:
                self.note("gunicorn has no worker to kill")
                return
            victim = self.rng.choice(children)
            victim.kill()
            self.note("SIGKILL one gunicorn worker (the arbiter starts another)", pid=victim.pid)
        elif name == "flushall":
            wipe = self.snapshot("FLUSHALL", flush=True)
            self.note("FLUSHALL of the bench's Redis", intake_messages=len(wipe.intake_ids),
                      delivery_messages=wipe.deliveries)
        elif name == "kill-redis":
            wipe = self.snapshot("SIGKILL + empty restart", flush=False)
            self.redis.kill()
            wipe.wiped_at, wipe.slack = time.monotonic(), 0.01
            self.redis.start()
            self.note("SIGKILL Redis, restarted empty", intake_messages=len(wipe.intake_ids),
                      delivery_messages=wipe.deliveries, down_s=round(time.monotonic() - wipe.wiped_at, 3))
        elif name == "restart-postgres":
            started = time.monotonic()
            self.pg.restart()
            self.note("pg_ctl restart -m fast", took_s=round(time.monotonic() - started, 2))
        elif name == "kill-beat":
            old = self.beat.pid
            self.beat.kill_main()
            self.start_beat()
            self.note("SIGKILL beat, restarted", pid=old, new_pid=self.beat.pid)
        else:
            raise ValueError(name)

    def snapshot(self, kind: str, *, flush: bool) -> Wipe:
        """What Redis holds (queued and unacknowledged messages), read in one MULTI, with FLUSHALL in the
        same MULTI when ``flush``: atomic, so the snapshot is exactly what the flush wiped."""
        client = self.redis.client()
        pipe = client.pipeline(transaction=True)
        pipe.eval(ALL_MESSAGES_LUA, 0)
        if flush:
            pipe.flushall()
        results = pipe.execute()
        now = time.monotonic()
        client.close()
        wipe = Wipe(kind, now - self.t0, now, now)
        held = held_alert_messages(results[0])
        wipe.intake_ids = {task_id for _, name, task_id in held if name == ENQUEUE_TASK and task_id}
        wipe.deliveries = sum(1 for _, name, _ in held if name == DELIVER_TASK)
        self.wipes.append(wipe)
        return wipe

    def watch(self) -> None:
        """Restart any process that exited without being killed by us, and say so (a finding)."""
        for slot, worker in list(self.workers.items()):
            if not worker.alive():
                self.exited_by_itself(f"worker-{slot}", worker)
                worker.kill_all()
                self.start_worker(slot)
                self.note(f"worker-{slot} exited by itself, restarted", code=worker.proc.returncode)
        if not self.beat.alive():
            self.exited_by_itself("beat", self.beat)
            self.start_beat()
            self.note("beat exited by itself, restarted")
        if not self.api.alive():
            self.exited_by_itself("gunicorn", self.api)
            self.api.kill_all()
            self.start_api()
            self.note("gunicorn exited by itself, restarted")

    def exited_by_itself(self, name: str, service: Service) -> None:
        """Record (and print) an exit we did not cause, with the end of that process's log."""
        self.unexpected_exits.append(f"{name} pid {service.pid} exited with {service.proc.returncode}")
        tail = "\n".join(service.log_text().splitlines()[-25:])
        self.unexpected_exit_logs.append(f"{name} pid {service.pid}:\n{tail}")
        print(f"  {name} (pid {service.pid}) exited by itself with {service.proc.returncode}; its log ends:\n"
              + "\n".join(f"    | {line[:300]}" for line in tail.splitlines()), flush=True)

    def send(self, alert: Alert) -> None:
        fields = alert_fields(alert.key)
        if alert.via == "api":
            conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=self.args.request_timeout)
            try:
                conn.request("POST", "/api/v1/notifications", body=json.dumps(fields).encode(),
                             headers={"content-type": "application/json", "authorization": f"Bearer {self.api_key}"})
                response = conn.getresponse()
                body = response.read()
                if response.status == 202:
                    alert.acked_at = time.monotonic()
                    alert.row_id = json.loads(body)["data"][0]["id"]
                else:
                    alert.error = f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                alert.error = type(exc).__name__
            finally:
                conn.close()
        else:
            try:
                self.producer.send_task(ENQUEUE_TASK, kwargs=fields, task_id=alert.task_id)
                alert.acked_at = time.monotonic()
                alert.row_id = celery_row_id(alert.task_id)
            except Exception as exc:  # any publish failure: not acknowledged
                alert.error = type(exc).__name__

    def offer(self, alerts: list[Alert]) -> list[threading.Thread]:
        """Offer the alerts at --rate from a scheduler thread through --senders sender threads."""
        work: queue.Queue = queue.Queue()

        def sender():
            while (alert := work.get()) is not None:
                self.send(alert)

        senders = [threading.Thread(target=sender, name=f"sender-{n}", daemon=True) for n in range(self.args.senders)]

        def scheduler():
            for alert in alerts:
                due = self.t0 + alert.index / self.args.rate
                if self.stopping.wait(max(0.0, due - time.monotonic())):
                    break
                alert.offered_at = time.monotonic()
                work.put(alert)
            for _ in senders:
                work.put(None)

        threads = [*senders, threading.Thread(target=scheduler, name="scheduler", daemon=True)]
        for thread in threads:
            thread.start()
        return threads

    def status_counts(self, prefix: str) -> dict[str, int]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT status, count(*) FROM notification_events WHERE certificate_id LIKE :p "
                                     "GROUP BY status"), {"p": f"{prefix}%"}).all()
        return {status: n for status, n in rows}

    def stored_keys(self, prefix: str) -> set[str]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return set(conn.execute(text("SELECT certificate_id FROM notification_events WHERE certificate_id "
                                         "LIKE :p"), {"p": f"{prefix}%"}).scalars())

    def alert_messages_in_broker(self, db: int = 0) -> int:
        """Enqueue and delivery messages Redis holds anywhere: queued, unacknowledged (held by a worker, or
        waiting to be given back by the visibility timeout), or in any other list or hash."""
        client = self.redis.client(db)
        try:
            return len(held_alert_messages(client.eval(ALL_MESSAGES_LUA, 0)))
        finally:
            client.close()

    def broker_is_empty(self, db: int = 0) -> bool:
        import redis

        try:
            return self.alert_messages_in_broker(db) == 0
        except redis.RedisError:
            return False

    def progress(self, alerts: list[Alert], label: str) -> None:
        from sqlalchemy.exc import SQLAlchemyError

        offered = sum(a.offered_at is not None for a in alerts)
        acked = sum(a.acked_at is not None for a in alerts)
        failed_offers = sum(a.error is not None for a in alerts)
        try:
            counts = self.status_counts(CHAOS_PREFIX)
        except SQLAlchemyError as exc:
            counts = {"unreadable": type(exc).__name__}
        print(f"  [{time.monotonic() - self.t0:7.2f} s] {label}: offered {offered}, acknowledged {acked}, "
              f"not acknowledged {failed_offers}; rows {dict(sorted(counts.items()))}", flush=True)

    def chaos_phase(self) -> dict:
        args = self.args
        alerts = []
        for i in range(args.count):
            via = "api" if i % 2 == 0 else "celery"
            task_id = str(uuid.uuid4()) if via == "celery" else None
            alerts.append(Alert(i, f"{CHAOS_PREFIX}{i:06d}", via, task_id=task_id))
        period = args.count / args.rate
        plan = self.schedule(period)
        print(f"chaos: offering {args.count} alerts at {args.rate:g}/s over {period:.1f} s (API and Celery "
              f"alternately), {len(plan)} events", flush=True)
        self.t0 = time.monotonic()
        threads = self.offer(alerts)
        next_progress = 10.0
        for at, name, arg in plan:
            while time.monotonic() - self.t0 < at:
                self.watch()
                if time.monotonic() - self.t0 >= next_progress:
                    self.progress(alerts, "offering")
                    next_progress += 10
                time.sleep(min(0.1, max(0.0, at - (time.monotonic() - self.t0))))
            self.do_event(name, arg)
        deadline = time.monotonic() + period + args.request_timeout + 30
        for thread in threads:
            while thread.is_alive():
                self.watch()
                if time.monotonic() > deadline:
                    raise BenchError("the offer did not finish in time")
                thread.join(0.2)
        offer_s = time.monotonic() - self.t0
        self.progress(alerts, f"offer done in {offer_s:.1f} s; draining")
        drained = self.drain(alerts)
        drain_s = time.monotonic() - self.t0 - offer_s
        for service in (*self.workers.values(), self.beat, self.api):
            service.kill_all()
        return self.chaos_figures(alerts, offer_s, drain_s, drained)

    def drain(self, alerts: list[Alert]) -> bool:
        """Until no row is pending or failed and Redis holds no alert's message (twice, a second apart):
        nothing can then store or deliver anything more. False if --drain-timeout ran out first."""
        from sqlalchemy.exc import SQLAlchemyError

        deadline = time.monotonic() + self.args.drain_timeout
        next_progress = time.monotonic() + 10
        calm = 0
        while True:
            self.watch()
            try:
                counts = self.status_counts(CHAOS_PREFIX)
                unfinished = counts.get("pending", 0) + counts.get("failed", 0)
            except SQLAlchemyError:
                unfinished = None
            if unfinished == 0 and self.broker_is_empty():
                calm += 1
                if calm >= 2:
                    return True
            else:
                calm = 0
            if time.monotonic() > deadline:
                print(f"  drain: not done within --drain-timeout={self.args.drain_timeout:g} s", flush=True)
                return False
            if time.monotonic() >= next_progress:
                self.progress(alerts, "draining")
                next_progress += 10
            time.sleep(1.0)

    def chaos_rows(self) -> dict[str, dict]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = conn.execute(text(
                "SELECT e.id, e.certificate_id, e.status, e.retry_count,"
                "       count(a.id) FILTER (WHERE a.outcome IN ('retry', 'dead')) AS failed_attempts,"
                "       count(a.id) FILTER (WHERE a.outcome IS NULL) AS open_attempts,"
                "       count(a.id) AS attempts"
                "  FROM notification_events e LEFT JOIN notification_attempts a ON a.notification_id = e.id"
                " WHERE e.certificate_id LIKE :p GROUP BY e.id"), {"p": f"{CHAOS_PREFIX}%"}).mappings().all()
        return {row["certificate_id"]: dict(row) for row in rows}

    def maintained_counts(self) -> dict[str, dict[str, int]]:
        """The counts per status the triggers kept through every kill and restart, and COUNT(*)."""
        from certctl_notify import store

        with self.engine.connect() as conn:
            return {"maintained": store.status_counts_now(conn), "counted": store.count_by_status(conn)}

    def next_to(self, alert: Alert) -> str:
        """The alert's acknowledgement and the event nearest to it (a worker killed as it popped the intake
        message shows here)."""
        acked = alert.acked_at - self.t0
        nearest = min(self.events, key=lambda e: abs(e["at_s"] - acked), default=None)
        if nearest is None:
            return f"{alert.key} ({alert.via}) acknowledged at {acked:.2f} s"
        return (f"{alert.key} ({alert.via}) acknowledged at {acked:.2f} s, {1000 * (nearest['at_s'] - acked):+.0f} ms "
                f"from: {nearest['event']}")

    def worker_log_counts(self, paths: list[Path]) -> dict:
        counts = collections.Counter()
        sweep: collections.Counter = collections.Counter()
        for path in paths:
            if not path.exists():
                continue
            with open(path, errors="replace") as log:
                for line in log:
                    if NOTHING_TO_CLAIM in line:
                        counts["nothing_to_claim"] += 1
                    elif SKIPPED_RESULT.search(line):
                        counts["skipped_results"] += 1
                    elif "the claim was lost" in line:
                        counts["claim_lost"] += 1
                    elif "failed outside the channel" in line:
                        counts["failed_outside_channel"] += 1
                    elif "refusing to start" in line:
                        counts["refused_to_start"] += 1
                    elif match := SWEEP_LINE.search(line):
                        sweep.update(ast.literal_eval(match.group(2)))
        return {**counts, "sweep_redispatched": dict(sweep)}

    def chaos_figures(self, alerts: list[Alert], offer_s: float, drain_s: float, drained: bool) -> dict:
        from certctl_notify.settings import DEFAULT_MAX_ATTEMPTS

        rows = self.chaos_rows()
        rows_by_id = {row["id"]: row for row in rows.values()}
        requests = [r for r in self.receiver.requests if str(r.key or "").startswith(CHAOS_PREFIX)]
        ok: dict[str, list[Received]] = collections.defaultdict(list)
        for r in requests:
            if 200 <= r.status < 300:
                ok[r.notification_id].append(r)
        acked = [a for a in alerts if a.acked_at is not None]
        unacked = [a for a in alerts if a.acked_at is None]
        unstored = [a for a in acked if a.key not in rows]
        window = self.args.wipe_window
        in_redis = [a for a in unstored if a.via == "celery" and any(w.held(a) for w in self.wipes)]
        in_flight = [a for a in unstored if a.via == "celery" and a not in in_redis
                     and any(w.just_before(a, window) for w in self.wipes)]
        with_broker = in_redis + in_flight
        with_broker_keys = {a.key for a in with_broker}
        unstored_other = [a for a in unstored if a.key not in with_broker_keys]
        unfinished = [row for row in rows.values() if row["status"] not in ("sent", "dead")]
        acked_keys = {a.key for a in acked}
        unfinished_acked = [row for row in unfinished if row["certificate_id"] in acked_keys]
        wrong_id = [a for a in acked if a.key in rows and rows[a.key]["id"] != a.row_id]
        duplicates = {nid: reqs for nid, reqs in ok.items() if len(reqs) > 1}
        same_webhook_id = sum(1 for nid, reqs in duplicates.items() if {r.webhook_id for r in reqs} == {nid})
        sent_without_2xx = [row for row in rows.values() if row["status"] == "sent" and row["id"] not in ok]
        delivered_not_sent = [nid for nid in ok if rows_by_id.get(nid, {}).get("status") != "sent"]
        dead = [row for row in rows.values() if row["status"] == "dead"]
        refusals = collections.Counter(r.notification_id for r in requests if r.status >= 300)
        latencies = []
        for alert in acked:
            row = rows.get(alert.key)
            if row is not None and row["id"] in ok:
                latencies.append(min(r.at for r in ok[row["id"]]) - alert.acked_at)
        logs = self.worker_log_counts([self.tmp / f"worker-{slot}.log" for slot in self.workers])
        signatures = collections.Counter(r.signature_ok for r in requests)
        by_wipe = {w.kind: sum(1 for a in with_broker if w.held(a) or w.just_before(a, window)) for w in self.wipes}
        return {
            "offered": len(alerts),
            "offered_api": sum(a.via == "api" for a in alerts),
            "offered_celery": sum(a.via == "celery" for a in alerts),
            "offer_s": round(offer_s, 1),
            "drain_s": round(drain_s, 1),
            "drained": drained,
            "acknowledged_api": sum(a.via == "api" for a in acked),
            "acknowledged_celery": sum(a.via == "celery" for a in acked),
            "not_acknowledged": dict(collections.Counter(f"{a.via}: {a.error}" for a in unacked)),
            "stored_not_acknowledged": sum(1 for a in unacked if a.key in rows),
            "lost": len(unstored_other) + len(unfinished),
            "lost_unstored": len(unstored_other),
            "lost_unstored_api": sum(a.via == "api" for a in unstored_other),
            "lost_unstored_keys": [a.key for a in unstored_other][:20],
            "lost_unstored_next_to": [self.next_to(a) for a in unstored_other][:20],
            "lost_unfinished_rows": len(unfinished),
            "lost_unfinished_rows_acknowledged": len(unfinished_acked),
            "lost_unfinished_statuses": dict(collections.Counter(r["status"] for r in unfinished)),
            "lost_with_broker_data": len(with_broker),
            "lost_with_broker_data_by_wipe": by_wipe,
            "lost_with_broker_data_in_redis": len(in_redis),
            "lost_with_broker_data_in_flight": len(in_flight),
            "wipe_window_s": window,
            "broker_wipes": [{"kind": w.kind, "at_s": round(w.at, 2), "intake_messages": len(w.intake_ids),
                              "delivery_messages": w.deliveries} for w in self.wipes],
            "row_id_mismatches": len(wrong_id),
            "status_counts": self.maintained_counts(),
            "rows": len(rows),
            "sent": sum(1 for r in rows.values() if r["status"] == "sent"),
            "delivered": len(ok),
            "duplicates": len(duplicates),
            "duplicate_rate": round(len(duplicates) / len(ok), 5) if ok else 0.0,
            "duplicates_same_webhook_id": same_webhook_id,
            "duplicate_2xx_counts": dict(collections.Counter(len(r) for r in duplicates.values())),
            "sent_without_2xx": len(sent_without_2xx),
            "delivered_not_sent": len(delivered_not_sent),
            "dead": len(dead),
            "dead_failed_attempts": {str(k): v for k, v in
                                     sorted(collections.Counter(r["failed_attempts"] for r in dead).items())},
            "dead_retry_count": {str(k): v for k, v in
                                 sorted(collections.Counter(r["retry_count"] for r in dead).items())},
            "dead_503s_received": {str(k): v for k, v in
                                   sorted(collections.Counter(refusals[r["id"]] for r in dead).items())},
            "dead_with_exactly_budget": sum(1 for r in dead if r["failed_attempts"] == DEFAULT_MAX_ATTEMPTS),
            "budget": DEFAULT_MAX_ATTEMPTS,
            "open_attempt_records": sum(r["open_attempts"] for r in rows.values()),
            "latency_s": {"p50": _round(percentile(latencies, 0.5)), "p95": _round(percentile(latencies, 0.95)),
                          "max": _round(max(latencies) if latencies else None), "n": len(latencies)},
            "nothing_to_claim": logs.get("nothing_to_claim", 0),
            "skipped_results": logs.get("skipped_results", 0),
            "claim_lost_warnings": logs.get("claim_lost", 0),
            "failed_outside_channel": logs.get("failed_outside_channel", 0),
            "sweep_redispatched": logs["sweep_redispatched"],
            "requests": len(requests),
            "signatures_verified": signatures[True],
            "signatures_failed": signatures[False],
            "unexpected_exits": self.unexpected_exits,
            "unexpected_exit_logs": self.unexpected_exit_logs,
            "worker_restarts": sum(self.incarnations.values()),
            "events": self.events,
        }

    # -- phase 2: the kill race --

    def start_race_worker(self, n: int, env: dict, launch: str, concurrency: int = 1) -> RaceWorker:
        import psutil

        log_path = self.tmp / f"race-worker-{n}.log"
        hostname = f"race-{n}-{os.getpid()}@%h"
        argv = self.worker_args(hostname, concurrency)
        if launch == "fork":
            pid = self.forkserver.spawn(["celery", *argv[3:]], env, log_path)
            worker = RaceWorker(pid, log_path, psutil.Process(pid))
        else:
            log = open(log_path, "ab")
            popen = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            worker = RaceWorker(popen.pid, log_path, psutil.Process(popen.pid), popen)
        self.race_workers.append(worker)
        return worker

    def wait_consuming(self, worker: RaceWorker, client, timeout: float) -> tuple[float, float]:
        """Seconds from now until the worker logged "ready." and until it consumes: clients of Redis (its:
        nothing else consumes) blocked in a pop (BRPOP, or BLMOVE of an intake relay), the same ones over
        three looks 5 ms apart (a worker may block on several connections, one after the other)."""
        started = time.monotonic()
        ready = blocked = None
        seen, same = None, 0
        while ready is None or blocked is None:
            now = time.monotonic() - started
            if not worker.process.is_running() or worker.process.status() == "zombie":
                raise BenchError(f"race worker {worker.pid} exited:\n{worker.log_text()[-3000:]}")
            if ready is None and " ready." in worker.log_text():
                ready = now
            clients = frozenset(c["id"] for c in client.client_list() if "b" in c.get("flags", ""))
            same = same + 1 if clients and clients == seen else 0
            seen = clients
            if ready is not None and same >= 2:
                blocked = now
            if now > timeout:
                raise BenchError(f"race worker {worker.pid} not consuming within {timeout:g} s:\n"
                                 f"{worker.log_text()[-3000:]}")
            time.sleep(0.005)
        return ready, blocked

    def kill_worker_now(self, worker: RaceWorker, children: list) -> None:
        import psutil

        for process in [worker.process, *children]:
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        if worker.popen is not None:
            worker.popen.wait(10)
        else:
            psutil.wait_procs([worker.process], timeout=10)

    def where_is(self, client, task_id: str) -> str:
        """Where Redis holds the message just after the kill: still in the intake queue, recorded in kombu's
        unacked hash, in some other key (an intake relay's in-progress list …), or nowhere."""
        keys = [key for key, _, held_id in held_alert_messages(client.eval(ALL_MESSAGES_LUA, 0)) if held_id == task_id]
        if not keys:
            return "popped, not recorded"
        if INTAKE_QUEUE in keys:
            return "still queued"
        if UNACKED_KEY in keys:
            return "recorded as unacknowledged"
        return "held in " + re.sub(r"[0-9a-f]{6,}|\d+", "…", keys[0])

    def kill_race(self) -> dict:
        from celery import Celery

        args = self.args
        env = self.env(**RACE_SETTINGS, CERTCTL_BROKER_URL=f"{self.redis.url}/1", CERTCTL_LOG_LEVEL="INFO")
        client = self.redis.client(1)
        client.flushdb()
        producer = Celery(broker=f"{self.redis.url}/1", set_as_current=False)
        rng = random.Random(args.seed + 1)
        commands = self.race_monitor = CommandLog(self.redis, 1).start()
        phase_started = time.monotonic()
        if args.kill_race_launch == "fork":
            started = time.monotonic()
            self.forkserver = ForkServer(env, self.tmp / "forkserver.log").start()
            print(f"kill race: fork server ready in {time.monotonic() - started:.2f} s", flush=True)
        tries = []
        for n in range(args.kill_race_tries):
            started = time.monotonic()
            worker = self.start_race_worker(n, env, args.kill_race_launch)
            ready_s, blocked_s = self.wait_consuming(worker, client, args.start_timeout)
            children = worker.process.children(recursive=True)
            task_id = str(uuid.uuid4())
            key = f"{RACE_PREFIX}{n:03d}"
            try:
                producer.send_task(ENQUEUE_TASK, kwargs=alert_fields(key), task_id=task_id)
            except Exception as exc:  # not published: nothing to lose
                tries.append({"key": key, "task_id": task_id, "published": False, "error": type(exc).__name__})
                self.kill_worker_now(worker, children)
                continue
            sent = time.perf_counter()
            delay = rng.uniform(0.0, args.kill_race_max_delay_ms / 1000)
            # a sleep, not a busy wait: on 2 cores a spinning bench would take the CPU the worker needs to
            # record the message, and widen the window it measures (the delay really waited is printed)
            time.sleep(delay)
            killed_wall = time.time()
            os.kill(worker.pid, signal.SIGKILL)
            killed_after = time.perf_counter() - sent
            self.kill_worker_now(worker, children)
            tries.append({"key": key, "task_id": task_id, "published": True, "ready_s": round(ready_s, 3),
                          "consuming_s": round(blocked_s, 3), "start_to_kill_s": round(time.monotonic() - started, 3),
                          "kill_aimed_ms": round(delay * 1000, 3), "kill_after_ms": round(killed_after * 1000, 3),
                          "killed_wall": killed_wall, "where": self.where_is(client, task_id)})
        tries_s = time.monotonic() - phase_started
        time.sleep(0.2)  # the monitor's last lines
        for t in tries:
            pushed = commands.first("LPUSH", t["task_id"]) if t["published"] else None
            recorded = commands.first("HSET", t["task_id"], pushed) if pushed is not None else None
            t["pop_to_record_ms"] = round((recorded - pushed) * 1000, 3) if recorded is not None else None
            t["pop_to_kill_ms"] = round((t.pop("killed_wall", 0) - pushed) * 1000, 3) if pushed is not None else None
        commands.close()
        published = [t for t in tries if t["published"]]
        print(f"kill race: {len(tries)} tries in {tries_s:.1f} s; at the kill the message was: "
              f"{dict(collections.Counter(t['where'] for t in published))}; starting a healthy worker", flush=True)
        # A healthy worker, and beat: an intake a killed pool process had committed without publishing its
        # delivery is found again only by the sweep (the redelivered intake finds its row, sends nothing).
        healthy = self.start_race_worker(len(tries), env, "exec", concurrency=2)
        healthy_started = time.monotonic()
        (self.tmp / "race-data").mkdir(exist_ok=True)
        beat = Service("race beat", [sys.executable, "-m", "celery", "-A", "workers.app", "beat"],
                       {**env, "CERTCTL_LOG_LEVEL": "WARNING", "CERTCTL_DATA_DIR": str(self.tmp / "race-data")},
                       self.tmp / "race-beat.log").start()
        self.race_beat = beat
        self.wait_consuming(healthy, client, args.start_timeout)
        settled = self.wait_race(published, client, args.kill_race_timeout)
        waited_s = time.monotonic() - healthy_started
        self.kill_worker_now(healthy, healthy.process.children(recursive=True))
        beat.kill_all()
        producer.close()
        client.close()
        return self.race_figures(tries, published, tries_s, waited_s, settled)

    def wait_race(self, published: list[dict], client, timeout: float) -> bool:
        """Until every published alert is stored and sent, or no row is pending and Redis holds none of
        their messages (twice, a second apart)."""
        deadline = time.monotonic() + timeout
        keys = {t["key"] for t in published}
        calm = 0
        while True:
            counts = self.status_counts(RACE_PREFIX)
            stored = self.stored_keys(RACE_PREFIX)
            if stored >= keys and counts.get("sent", 0) + counts.get("dead", 0) == len(stored):
                return True
            if counts.get("pending", 0) + counts.get("failed", 0) == 0 and self.broker_is_empty(1):
                calm += 1
                if calm >= 2:
                    return True
            else:
                calm = 0
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)

    def race_figures(self, tries, published, tries_s, waited_s, settled) -> dict:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            rows = {r.certificate_id: r for r in conn.execute(text(
                "SELECT id, certificate_id, status FROM notification_events WHERE certificate_id LIKE :p"),
                {"p": f"{RACE_PREFIX}%"})}
        ok = collections.Counter(r.notification_id for r in self.receiver.requests
                                 if str(r.key or "").startswith(RACE_PREFIX) and 200 <= r.status < 300)
        for t in published:
            row = rows.get(t["key"])
            t["stored"] = row is not None
            t["status"] = row.status if row is not None else None
            t["received_2xx"] = ok[row.id] if row is not None else 0
        lost = [t for t in published if not t["stored"] or t["status"] != "sent"]
        starts = [t["consuming_s"] for t in published]
        where = collections.Counter(t["where"] for t in published)
        return {
            "tries": len(tries),
            "published": len(published),
            "launch": self.args.kill_race_launch,
            "worker_start_s": {"p50": _round(percentile(starts, 0.5)), "min": _round(min(starts, default=None)),
                               "max": _round(max(starts, default=None))},
            "worker_ready_log_s_p50": _round(percentile([t["ready_s"] for t in published], 0.5)),
            "kill_aimed_ms": {"min": _round(min((t["kill_aimed_ms"] for t in published), default=None)),
                              "max": _round(max((t["kill_aimed_ms"] for t in published), default=None))},
            "kill_after_ms": {"min": _round(min((t["kill_after_ms"] for t in published), default=None)),
                              "max": _round(max((t["kill_after_ms"] for t in published), default=None))},
            "pop_to_record_ms": _spread([t["pop_to_record_ms"] for t in published
                                         if t.get("pop_to_record_ms") is not None]),
            "pop_to_kill_ms_lost": _spread([t["pop_to_kill_ms"] for t in lost if t.get("pop_to_kill_ms") is not None]),
            "where_at_kill": dict(where),
            "kill_after_ms_by_where": {w: [_round(min(t["kill_after_ms"] for t in published if t["where"] == w)),
                                           _round(max(t["kill_after_ms"] for t in published if t["where"] == w))]
                                       for w in where},
            "stored": sum(t["stored"] for t in published),
            "delivered": sum(t["received_2xx"] > 0 for t in published),
            "lost": len(lost),
            "lost_where_at_kill": dict(collections.Counter(t["where"] for t in lost)),
            "lost_keys": [t["key"] for t in lost],
            "delivered_more_than_once": sum(t["received_2xx"] > 1 for t in published),
            "settled": settled,
            "tries_s": round(tries_s, 1),
            "healthy_wait_s": round(waited_s, 1),
        }

    # -- the run --

    def run(self) -> None:
        started = time.monotonic()
        self.setup()
        figures = self.chaos_phase()
        self.print_chaos(figures)
        if self.args.kill_race_tries > 0:
            figures["kill_race"] = self.kill_race()
            self.print_race(figures["kill_race"])
        figures["elapsed_s"] = round(time.monotonic() - started, 1)
        figures["settings"] = {**CHAOS_SETTINGS, "sweep_interval_s": self.args.sweep_interval,
                               "sweep_grace_s": self.args.sweep_grace, "fail_rate": self.args.fail_rate,
                               "rate": self.args.rate, "kill_every_s": self.args.kill_every,
                               "worker_log_level": self.args.worker_log_level}
        print(f"elapsed: {figures['elapsed_s']:.1f} s", flush=True)
        print(json.dumps(figures), flush=True)

    @staticmethod
    def print_chaos(f: dict) -> None:
        lat = f["latency_s"]
        print()
        print(f"chaos: {f['offered']} alerts offered in {f['offer_s']:.1f} s (API {f['offered_api']}, Celery "
              f"{f['offered_celery']}); drained in {f['drain_s']:.1f} s{'' if f['drained'] else ' (NOT drained)'}")
        print(f"  acknowledged            : {f['acknowledged_api'] + f['acknowledged_celery']} (API "
              f"{f['acknowledged_api']}, Celery {f['acknowledged_celery']}); not acknowledged "
              f"{sum(f['not_acknowledged'].values())} {f['not_acknowledged'] or ''}, of which stored anyway "
              f"{f['stored_not_acknowledged']}")
        counts = f["status_counts"]
        agree = "equal" if counts["maintained"] == counts["counted"] else "DIFFER"
        print(f"  counts per status       : maintained {counts['maintained']} {agree} COUNT(*) {counts['counted']}")
        print(f"  LOST                    : {f['lost']} (acknowledged, never stored: {f['lost_unstored']}, of them "
              f"via the API {f['lost_unstored_api']}; rows neither sent nor dead at the end: "
              f"{f['lost_unfinished_rows']} {f['lost_unfinished_statuses'] or ''})"
              + "".join(f"\n      {line}" for line in f["lost_unstored_next_to"][:10]))
        print(f"  lost with broker's data : {f['lost_with_broker_data']} {f['lost_with_broker_data_by_wipe']}: Celery "
              f"intake whose message Redis held when it was wiped ({f['lost_with_broker_data_in_redis']}), or "
              f"acknowledged less than {f['wipe_window_s']:g} s before and in no snapshot (popped, not yet recorded: "
              f"{f['lost_with_broker_data_in_flight']}) (Redis held "
              + "; ".join(f"{w['intake_messages']} intake + {w['delivery_messages']} delivery messages at the "
                          f"{w['kind']}" for w in f["broker_wipes"]) + ")")
        print(f"  duplicates              : {f['duplicates']} of {f['delivered']} delivered "
              f"({100 * f['duplicate_rate']:.2f} %), 2xx per duplicate {f['duplicate_2xx_counts']}; same webhook-id "
              f"on every 2xx: {f['duplicates_same_webhook_id']} of {f['duplicates']}")
        print(f"  sent without a 2xx      : {f['sent_without_2xx']}   (2xx but the row not sent: "
              f"{f['delivered_not_sent']}; row ids not as acknowledged: {f['row_id_mismatches']})")
        print(f"  dead rows               : {f['dead']}, with exactly {f['budget']} failed attempts: "
              f"{f['dead_with_exactly_budget']}; failed attempts {f['dead_failed_attempts']}, retry_count "
              f"{f['dead_retry_count']}, 503s received {f['dead_503s_received']}")
        print(f"  ack → first 200         : p50 {_fmt(lat['p50'])} s, p95 {_fmt(lat['p95'])} s, max "
              f"{_fmt(lat['max'])} s (n {lat['n']})")
        print(f"  found nothing to claim  : {f['nothing_to_claim']} deliveries (worker logs at INFO: "
              f"\"nothing to claim\"; Celery's \"succeeded: 'skipped'\" lines: {f['skipped_results']})")
        print(f"  sweep re-dispatched     : {f['sweep_redispatched']} (worker logs); records lost to a claim "
              f"taken over: {f['claim_lost_warnings']}; deliveries failed outside the channel: "
              f"{f['failed_outside_channel']}; attempt records left open: {f['open_attempt_records']}")
        print(f"  signatures              : {f['signatures_verified']} verified, {f['signatures_failed']} failed "
              f"({f['requests']} requests)")
        print(f"  worker restarts         : {f['worker_restarts']}; exits we did not cause: "
              f"{f['unexpected_exits'] or 'none'}", flush=True)

    @staticmethod
    def print_race(r: dict) -> None:
        start = r["worker_start_s"]
        print()
        print(f"kill race: {r['tries']} tries ({r['published']} published) in {r['tries_s']:.1f} s; worker start "
              f"({r['launch']}): p50 {_fmt(start['p50'])} s, min {_fmt(start['min'])} s, max {_fmt(start['max'])} s "
              f"(to consuming: blocked on Redis; \"ready.\" logged p50 {_fmt(r['worker_ready_log_s_p50'])} s); killed "
              f"{_fmt(r['kill_after_ms']['min'])}-{_fmt(r['kill_after_ms']['max'])} ms after send_task returned "
              f"(aimed at {_fmt(r['kill_aimed_ms']['min'])}-{_fmt(r['kill_aimed_ms']['max'])} ms; the bench may be "
              "descheduled in between)")
        print(f"  at the kill the message was: {r['where_at_kill']}; kill delays (ms, min-max) by where: "
              f"{r['kill_after_ms_by_where']}")
        window, lost = r["pop_to_record_ms"], r["pop_to_kill_ms_lost"]
        if window["n"]:
            print(f"  the window (Redis MONITOR: the LPUSH a blocked BRPOP takes → HSET unacked): p50 "
                  f"{_fmt(window['p50'])} ms, max {_fmt(window['max'])} ms over {window['n']} recorded tries; the "
                  f"lost ones were killed {_fmt(lost['p50'])} ms (p50), {_fmt(lost['max'])} ms (max) after the LPUSH")
        else:
            print("  the window (Redis MONITOR): no message was recorded in kombu's unacked hash (another layout)")
        print(f"  after a healthy worker ({r['healthy_wait_s']:.1f} s{'' if r['settled'] else ', NOT settled'}): "
              f"stored {r['stored']}, delivered {r['delivered']}, LOST {r['lost']} {r['lost_where_at_kill'] or ''}, "
              f"delivered more than once {r['delivered_more_than_once']}", flush=True)

    def logs(self):
        out = []
        for path in sorted(self.tmp.glob("*.log"), key=lambda p: p.stat().st_mtime)[-4:]:
            out.append((path.name, path.read_text(errors="replace")[-3000:]))
        if self.pg is not None:
            out.append(("postgres.log", self.pg.log_tail()))
        return out

    def cleanup(self) -> None:
        import psutil

        self.stopping.set()

        def kill_processes(processes):
            for process in processes:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()

        def keep_pg_log():
            if self.pg is not None and self.pg.log.exists():
                shutil.copy(self.pg.log, self.tmp / "postgres.log.txt")

        steps = [
            ("workers", lambda: [w.kill_all() for w in self.workers.values()]),
            ("beat", lambda: self.beat and self.beat.kill_all()),
            ("gunicorn", lambda: self.api and self.api.kill_all()),
            ("orphaned pool processes", lambda: kill_processes(self.orphans)),
            ("race workers", lambda: kill_processes(
                [p for w in self.race_workers if w.process.is_running()
                 for p in [*w.process.children(recursive=True), w.process]])),
            ("race beat", lambda: self.race_beat and self.race_beat.kill_all()),
            ("redis monitor", lambda: self.race_monitor and self.race_monitor.close()),
            ("fork server", lambda: self.forkserver and self.forkserver.stop()),
            ("producer", lambda: self.producer and self.producer.close()),
            ("receiver", lambda: self.receiver and self.receiver.stop()),
            ("engine", lambda: self.engine and self.engine.dispose()),
            ("redis", lambda: self.redis and self.redis.kill()),
            ("postgres log", keep_pg_log),
            ("postgres", lambda: self.pg and self.pg.stop()),
            ("postgres files", lambda: self.pg and self.pg.remove()),
        ]
        run_cleanup(steps)
        if self.failed or self.args.keep_logs:
            print(f"logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _spread(values: list[float]) -> dict:
    return {"p50": _round(percentile(values, 0.5)), "max": _round(max(values, default=None)), "n": len(values)}


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=10000, help="alerts offered in the chaos phase")
    parser.add_argument("--rate", type=float, default=55, help="alerts offered per second")
    parser.add_argument("--kill-every", type=float, default=10, help="seconds between two worker kills")
    parser.add_argument("--skip", action="append", default=[],
                        choices=["kill-gunicorn-worker", "flushall", "restart-postgres", "kill-beat", "kill-redis"],
                        help="leave this one-off event out (repeatable)")
    parser.add_argument("--fail-rate", type=float, default=0.2, help="share of requests the receiver answers 503")
    parser.add_argument("--seed", type=int, default=1, help="seeds the receiver's answers and the kill race")
    parser.add_argument("--sweep-interval", type=float, default=5, help="CERTCTL_NOTIFICATION_RETRY_INTERVAL, s")
    parser.add_argument("--sweep-grace", type=float, default=10, help="CERTCTL_SWEEP_GRACE, s")
    parser.add_argument("--wipe-window", type=float, default=0.5,
                        help="a Celery intake acknowledged this many s before a wipe of Redis and never stored "
                             "counts as lost with the broker's data")
    parser.add_argument("--senders", type=int, default=16, help="threads offering alerts")
    parser.add_argument("--request-timeout", type=float, default=10, help="timeout of one POST, s")
    parser.add_argument("--drain-timeout", type=float, default=600,
                        help="seconds after the offer for every row to be sent or dead")
    parser.add_argument("--kill-race-tries", type=int, default=40, help="0 skips the kill race")
    parser.add_argument("--kill-race-max-delay-ms", type=float, default=5,
                        help="each SIGKILL comes a random 0 to this many ms after send_task returned")
    parser.add_argument("--kill-race-launch", choices=["fork", "exec"], default="fork",
                        help="start the race's workers from bench/worker_forkserver.py (fast) or as "
                             "python -m celery (a cold start each)")
    parser.add_argument("--kill-race-timeout", type=float, default=90,
                        help="seconds the healthy worker may take to store and deliver the race's alerts")
    parser.add_argument("--worker-log-level", default="INFO",
                        help="CERTCTL_LOG_LEVEL of the workers (INFO shows the deliveries that found nothing to "
                             "claim; beat and gunicorn log at WARNING)")
    parser.add_argument("--start-timeout", type=float, default=60, help="seconds a process may take to be ready")
    parser.add_argument("--max-seconds", type=int, default=1800, help="hard limit for the whole run")
    parser.add_argument("--keep-logs", action="store_true", help="keep the logs (kept anyway on failure)")
    args = parser.parse_args(argv)
    if args.count < 2 or args.rate <= 0 or args.kill_every <= 0:
        parser.error("--count must be at least 2, --rate and --kill-every positive")
    if not 0 <= args.fail_rate < 1:
        parser.error("--fail-rate must be in [0, 1)")
    return run_guarded(Chaos(args), args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
