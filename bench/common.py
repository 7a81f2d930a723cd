"""What every benchmark shares: a throw-away database at Alembic head, the run guard (overall alarm,
clean-up, failure report) and per-process CPU accounting of the local services."""

from __future__ import annotations

import contextlib
import re
import sys
import uuid
from collections.abc import Callable, Iterable

#: The machine's PostgreSQL (trust auth); benchmarks create their own database next to it.
PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


class ScratchDatabase:
    """``certctl_bench_<random>`` (or ``name``, for a bench with ``--keep``): created and migrated by
    `create`, dropped (even with open connections) by `drop`; a `drop` without a `create` does nothing."""

    def __init__(self, name: str | None = None):
        self.name = name or f"certctl_bench_{uuid.uuid4().hex[:10]}"
        self.url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{self.name}"
        self._admin = None

    def create(self) -> ScratchDatabase:
        """A named database an earlier ``--keep`` run left is dropped first."""
        from sqlalchemy import create_engine, text

        from certctl_notify.migrate import upgrade

        self._admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with self._admin.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": self.name}).first():
                print(f"note: dropping {self.name} left by an earlier --keep run", flush=True)
                conn.execute(text(f'DROP DATABASE "{self.name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        upgrade(self.url)
        return self

    @property
    def admin(self):
        """An AUTOCOMMIT engine on the maintenance database (for statistics and version queries)."""
        return self._admin

    def drop(self, *, keep: bool = False) -> None:
        """``keep``: leave the database for a look (--keep), only close the admin engine."""
        from sqlalchemy import text

        if self._admin is None:
            return
        if keep:
            print(f"database {self.name} kept (--keep)")
        else:
            with self._admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()
        self._admin = None


def run_cleanup(steps: Iterable[tuple[str, Callable[[], object]]]) -> bool:
    """Run every clean-up step even when one fails, saying what was left behind; True if all worked."""
    ok = True
    for name, step in steps:
        try:
            step()
        except Exception as exc:  # keep cleaning up
            print(f"cleanup: {name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            ok = False
    return ok


# --- failing, running, measuring ------------------------------------------------------------------


class BenchError(RuntimeError):
    """The run cannot produce a figure (a process died, a wait timed out, rows went dead …)."""


class OverallTimeout(BaseException):
    """Raised by SIGALRM when the whole run exceeds ``--max-seconds``; cleanup still runs."""


def run_guarded(bench, max_seconds: int) -> int:
    """``bench.run()`` under an overall alarm, with SIGTERM as KeyboardInterrupt and ``bench.cleanup()``
    always; a failed run prints why and the tails of ``bench.logs()`` ((title, text) pairs). Returns
    the exit code."""
    import signal

    def on_alarm(*_):
        raise OverallTimeout(f"the run exceeded --max-seconds={max_seconds}")

    def on_term(*_):
        raise KeyboardInterrupt("SIGTERM")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(max_seconds)
    try:
        bench.run()
        return 0
    except (BenchError, OverallTimeout, KeyboardInterrupt) as exc:
        bench.failed = True
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        for title, text in bench.logs():
            print(f"--- {title} (tail) ---\n{text}", file=sys.stderr)
        return 1
    except BaseException:
        bench.failed = True
        raise
    finally:
        signal.alarm(0)
        bench.cleanup()


def process_tree(proc) -> list:
    """The psutil processes of a running ``subprocess.Popen`` and all its descendants (main first)."""
    import psutil

    if proc is None or proc.poll() is not None:
        return []
    try:
        main = psutil.Process(proc.pid)
        return [main, *main.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


#: A PostgreSQL backend's process title: "postgres: <user> <database> <client address>".
_PG_BACKEND = re.compile(r"^postgres: \S+ \S+ (\d{1,3}(\.\d{1,3}){3}|\[local\]|[0-9a-f:]+)")


def service_processes(dbname: str) -> dict[str, list]:
    """This machine's PostgreSQL and Redis processes: ``bench db`` (backends serving ``dbname``),
    ``background`` (checkpointer, WAL writer … which work for every database), ``other backends``
    and ``redis``."""
    import psutil

    groups: dict[str, list] = {"bench db": [], "background": [], "other backends": [], "redis": []}
    for p in psutil.process_iter(["name", "cmdline"]):
        name, cmdline = p.info["name"] or "", " ".join(p.info["cmdline"] or [])
        if name in ("postgres", "postmaster"):
            if f" {dbname} " in f"{cmdline} ":
                groups["bench db"].append(p)
            else:
                groups["other backends" if _PG_BACKEND.match(cmdline) else "background"].append(p)
        elif name.startswith("redis-server"):
            groups["redis"].append(p)
    return groups


def cpu_by_pid(groups: dict[str, list]) -> dict[str, dict[int, float]]:
    """CPU seconds so far (user + system) of every process, per group; vanished processes are skipped."""
    import psutil

    per_pid: dict[str, dict[int, float]] = {}
    for group, processes in groups.items():
        per_pid[group] = {}
        for p in processes:
            # a process that exited since it was listed has nothing left to count
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = p.cpu_times()
                per_pid[group][p.pid] = t.user + t.system
    return per_pid


def cpu_used(before: dict[str, dict[int, float]], after: dict[str, dict[int, float]]) -> dict[str, float]:
    """CPU seconds each group used between two `cpu_by_pid` snapshots (processes started meanwhile
    count from zero)."""
    out = {}
    for group, pids in after.items():
        start = before.get(group, {})
        out[group] = sum(max(0.0, v - start.get(pid, 0.0)) for pid, v in pids.items())
    return out


def system_busy() -> float:
    """CPU seconds all cores have spent busy since boot."""
    import psutil

    total = psutil.cpu_times()
    return sum(total) - total.idle - getattr(total, "iowait", 0.0)


# --- a Redis db of one's own, and a recording webhook receiver --------------------------------------

#: Marks a Redis db as taken by one run: the test suite's key (tests/conftest.py), so a concurrent
#: pytest passes over a db a bench holds, and a bench over one a test run holds.
REDIS_OWNER_KEY = "certctl-test:owner"
#: dbs never claimed here: 0 (the machine's default), 9 (the tests' first choice), 12 (flushed by
#: throughput, intake and storm, which claim nothing), 13 and 14 (api_latency, scale, console).
_RESERVED_REDIS_DBS = frozenset({0, 9, 12, 13})  # tests; intake and throughput flush 12, api_latency 13


class ScratchRedisDb:
    """An empty db of the machine's Redis claimed with `REDIS_OWNER_KEY`, highest number first (the tests
    search from 1 up); `release` deletes the keys it holds then and the claim, and never flushes.

    Only an empty db is claimed and the claim keeps others out, so every key found there later is the run's.
    """

    def __init__(self, owner: str, *, seconds: float, base_url: str = "redis://127.0.0.1:6379"):
        self.token = f"{owner} pid {uuid.uuid4().hex[:8]}"
        self.seconds, self.base_url = int(seconds), base_url
        self.db: int | None = None
        self.client = None

    @property
    def url(self) -> str:
        return f"{self.base_url}/{self.db}"

    def claim(self) -> ScratchRedisDb:
        """Raises BenchError when every candidate db holds keys or another run's claim."""
        import redis

        for db in (n for n in range(15, 0, -1) if n not in _RESERVED_REDIS_DBS):
            client = redis.Redis.from_url(f"{self.base_url}/{db}", socket_timeout=10)
            if client.dbsize() == 0 and client.set(REDIS_OWNER_KEY, self.token, nx=True, ex=self.seconds):
                self.db, self.client = db, client
                return self
            client.close()
        raise BenchError("no free Redis db: each candidate holds keys or another run's claim")

    def keys(self) -> list[bytes]:
        """The run's keys (the claim left out)."""
        return [k for k in self.client.scan_iter(count=1000) if k != REDIS_OWNER_KEY.encode()]

    def release(self) -> None:
        if self.client is None:
            return
        if self.client.get(REDIS_OWNER_KEY) != self.token.encode():
            print(f"Redis db {self.db}: the claim expired or changed hands; its keys are left alone", file=sys.stderr)
        else:
            keys = self.keys()
            for start in range(0, len(keys), 1000):
                self.client.delete(*keys[start:start + 1000])
            self.client.delete(REDIS_OWNER_KEY)
        self.client.close()
        self.client = None


def _serve_receiver(conn, secret: str, fail_rate: float, seed: int, failing_prefix: str) -> None:
    from bench.chaos import Receiver

    receiver = Receiver(secret, fail_rate, seed, failing_prefix)
    conn.send(receiver.url)
    while (command := conn.recv()) != "stop":
        conn.send(len(receiver.requests) if command == "count" else list(receiver.requests))
    receiver.stop()
    conn.send(None)


class ReceiverProcess:
    """`bench.chaos.Receiver` (checks each Standard Webhooks signature, records each request, answers a
    seeded ``fail_rate`` of the alerts whose certificate id starts with ``failing_prefix`` with 503, the
    rest 200 at once) in a process of its own, so the bench's threads never hold its GIL."""

    def __init__(self, secret: str, *, fail_rate: float = 0.0, seed: int = 0, failing_prefix: str = ""):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve_receiver, args=(child, secret, fail_rate, seed, failing_prefix),
                                name="receiver", daemon=True)
        self.proc.start()
        if not self._conn.poll(30):
            self.stop()
            raise BenchError("the webhook receiver did not start within 30 s")
        self.url: str = self._conn.recv()

    def _ask(self, command: str):
        self._conn.send(command)
        if not self._conn.poll(120):
            raise BenchError(f"the webhook receiver did not answer {command!r} within 120 s")
        return self._conn.recv()

    def count(self) -> int:
        """Requests answered so far."""
        return self._ask("count")

    def records(self) -> list:
        """Every request so far, as `bench.chaos.Received` (arrival on this machine's monotonic clock)."""
        return self._ask("records")

    def stop(self) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(BenchError, OSError):
                self._ask("stop")
            self.proc.join(10)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
