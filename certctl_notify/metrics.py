"""Every Prometheus object of certctl-notify, each on an explicit registry (never the global one).

The API's ``GET /metrics`` (`scrape_registry`) shows two kinds of series:

- counters and the histogram that worker and API processes increment (`Metrics`). With
  ``CERTCTL_METRICS_DIR`` set, each process writes them under ``<dir>/<role>-<host>/`` (prometheus_client
  multiprocess mode) and the scrape adds up every file there: Celery prefork children, gunicorn workers,
  both roles, every replica sharing the directory. Exited processes' counts are folded into an archive
  file per directory (`fold_exited`), so totals never fall and files stay few. Where nothing is shared,
  each worker serves its own (`serve_worker_metrics`, CERTCTL_WORKER_METRICS_PORT);
- gauges read when scraped: one grouped query on PostgreSQL (`DatabaseCollector`) and the length of
  each Celery queue on Redis or RabbitMQ (`QueueCollector`). A source that cannot be read leaves its
  series out and counts ``certctl_metrics_collect_errors_total`` — it never reports zeros.

`fold_exited` writes prometheus_client's own file format through its ``mmap_dict.MmapedDict``;
tests/workers/test_worker_metrics.py fails when that format or class changes under it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

from kombu import Connection
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess, start_http_server, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.mmap_dict import MmapedDict
from sqlalchemy.exc import SQLAlchemyError

from certctl_notify import store
from certctl_notify.broker_urls import is_amqp, is_redis_tcp
from certctl_notify.errors import ChannelNotConfigured, PermanentError
from certctl_notify.model import Channel, Outcome, utcnow
from certctl_notify.publish import QUEUES, amqp_queue_lengths, redis_client

log = logging.getLogger(__name__)

#: Connect and read timeout of the broker read, in seconds: a slow broker must not stall the scrape.
BROKER_TIMEOUT_SECONDS = 0.25
#: Buckets of one attempt's duration, in seconds (the HTTP budget defaults to 15 s, the task limit to 120 s).
DELIVERY_BUCKETS_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 120)
DEAD_REASONS = ("exhausted", "permanent", "unconfigured")
REQUEUE_MODES = ("single", "bulk")
SWEEP_REASONS = ("overdue", "stale_pending", "abandoned")
PURGED_STATUSES = ("sent", "read", "dead")


def dead_reason(exc: Exception) -> str:
    """Why a row went dead: ``unconfigured`` channel, another ``permanent`` error, or retries ``exhausted``."""
    if isinstance(exc, ChannelNotConfigured):
        return "unconfigured"
    return "permanent" if isinstance(exc, PermanentError) else "exhausted"


class Recorder(Protocol):
    """What the core calls at its increment points: `Metrics` records, `NO_METRICS` does nothing."""

    def attempt(self, row, outcome: Outcome, seconds: float | None, *, error: Exception | None = None) -> None: ...

    def requeued(self, mode: str, count: int = 1) -> None: ...

    def redispatched(self, by_reason: Mapping[str, int]) -> None: ...

    def purged(self, by_status: Mapping[str, int]) -> None: ...


class Metrics:
    """The counters and the histogram of this process; create one per process, after `enable_multiprocess`."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.attempts = Counter(
            "certctl_notification_attempts_total", "Delivery attempts by channel and recorded outcome "
            "(sent, retry, dead).", ["channel", "outcome"], registry=self.registry)
        self.dead_transitions = Counter(
            "certctl_notification_dead_transitions_total", "Notifications that went dead, by channel and "
            "reason: exhausted (retry budget spent), permanent (refused), unconfigured (channel has no "
            "settings). A true counter: a requeue does not lower it.", ["channel", "reason"], registry=self.registry)
        self.delivery_seconds = Histogram(
            "certctl_notification_delivery_seconds", "Duration of one delivery attempt, from claim to recorded "
            "outcome, by channel.", ["channel"], buckets=DELIVERY_BUCKETS_SECONDS, registry=self.registry)
        self.requeues = Counter(
            "certctl_notification_requeues_total", "Notifications requeued by an operator: single (one id) or "
            "bulk (rows requeued by a filter job).", ["mode"], registry=self.registry)
        self.sweep_redispatched = Counter(
            "certctl_notification_sweep_redispatched_total", "Notifications the sweep re-dispatched, by reason: "
            "overdue retry, stale_pending (never picked up), abandoned (lease expired).", ["reason"],
            registry=self.registry)
        self.purged_rows = Counter(
            "certctl_notification_purged_total", "Notifications deleted by retention (with their attempts), by the "
            "status they were in: sent, read, dead.", ["status"], registry=self.registry)
        self.collect_errors = Counter(
            "certctl_metrics_collect_errors_total", "Scrapes in which a gauge source (database, broker) could "
            "not be read; its series were left out of that scrape, not reported as zero.", ["source"],
            registry=self.registry)
        # Every known series exists from the start at 0, so its first increment shows as an increase.
        for channel in Channel:
            self.delivery_seconds.labels(channel.value)
            for outcome in Outcome:
                self.attempts.labels(channel.value, outcome.value)
            for reason in DEAD_REASONS:
                self.dead_transitions.labels(channel.value, reason)
        for mode in REQUEUE_MODES:
            self.requeues.labels(mode)
        for reason in SWEEP_REASONS:
            self.sweep_redispatched.labels(reason)
        for status in PURGED_STATUSES:
            self.purged_rows.labels(status)
        for source in ("database", "broker"):
            self.collect_errors.labels(source)

    def attempt(self, row, outcome: Outcome, seconds: float | None, *, error: Exception | None = None) -> None:
        """Count an attempt whose outcome was written to ``row``; None (the claim was lost) counts nothing."""
        if row is None:
            return
        self.attempts.labels(row.channel, outcome.value).inc()
        if seconds is not None:
            self.delivery_seconds.labels(row.channel).observe(seconds)
        if outcome is Outcome.DEAD:
            self.dead_transitions.labels(row.channel, dead_reason(error)).inc()

    def requeued(self, mode: str, count: int = 1) -> None:
        """Count ``count`` rows requeued by an operator, ``single`` or ``bulk``."""
        if count:
            self.requeues.labels(mode).inc(count)

    def redispatched(self, by_reason: Mapping[str, int]) -> None:
        """Count what one sweep tick re-dispatched, by reason."""
        for reason, count in by_reason.items():
            self.sweep_redispatched.labels(reason).inc(count)

    def purged(self, by_status: Mapping[str, int]) -> None:
        """Count the rows one retention batch deleted, by the status they were in."""
        for status, count in by_status.items():
            if count:
                self.purged_rows.labels(status).inc(count)


class _NoMetrics:
    """Records nothing: the default of core functions called by tests and one-off CLI commands."""

    def attempt(self, row, outcome, seconds, *, error=None) -> None:
        pass

    def requeued(self, mode, count=1) -> None:
        pass

    def redispatched(self, by_reason) -> None:
        pass

    def purged(self, by_status) -> None:
        pass


NO_METRICS: Recorder = _NoMetrics()


def process_directory(root: Path, role: str) -> Path:
    """This process's directory under ``root``: one per role and host, so containers sharing a volume
    (whose pids repeat) never write the same file."""
    return Path(root) / f"{role}-{socket.gethostname()}"


def enable_multiprocess(root: Path, role: str, *, fold: bool) -> Path:
    """Make the counters this process creates from now on multiprocess values under `process_directory`.

    Call it at a process edge before creating `Metrics`: in a Celery worker's main process before the
    pool forks and in gunicorn's master (``fold=True``: the counts of the previous run's processes are
    folded into the directory's archive, so totals carry on across a restart instead of falling), and
    in the app factory (``fold=False``).
    """
    directory = process_directory(root, role)
    directory.mkdir(parents=True, exist_ok=True)
    if fold:
        fold_exited(directory)
    # prometheus_client opens each process's files in the directory this variable names ...
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # ... and picks its value class from it once, on first import. The ``celery`` command has already
    # imported it by then (through Flower's entry point), so the choice is made here, explicitly.
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()
    return directory


def mark_process_dead(root: Path, role: str, pid: int) -> None:
    """Bookkeeping for an exited process (a pool child, a gunicorn worker): its counts move into the
    directory's archive, so they stay in the totals while its files go."""
    directory = process_directory(root, role)
    multiprocess.mark_process_dead(pid, str(directory))
    fold_exited(directory, {pid})


#: Each role directory keeps the counts of processes that exited in one file per type
#: (``counter_archive.db``, ``histogram_archive.db``): prometheus_client adds up every ``<type>_*.db``.
ARCHIVE = "archive"
FOLDED_TYPES = ("counter", "histogram")
#: Folding holds this file's lock exclusively, a scrape holds it shared: a scrape never sees a count
#: both in the archive and in the file it came from (a false rise), or in neither (a false fall).
FOLD_LOCK = ".fold.lock"


@contextlib.contextmanager
def _fold_lock(directory: Path, *, exclusive: bool):
    with open(directory / FOLD_LOCK, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


def fold_exited(directory: Path, pids: set[int] | None = None) -> int:
    """Add the counters and histograms of exited processes (``pids``, or every process not running now)
    into the directory's archive files and delete their own files; returns the files folded.

    Pool processes come and go (CERTCTL_WORKER_MAX_TASKS_PER_CHILD) and a restart replaces them all:
    without this, each left two files behind for every scrape to read, and wiping them at start made
    the totals fall, which Prometheus reads as a counter reset (a false spike in ``rate()``).
    """
    folded = 0
    with _fold_lock(directory, exclusive=True):
        for kind in FOLDED_TYPES:
            sources = [path for path in directory.glob(f"{kind}_*.db") if _exited(path, pids)]
            if not sources:
                continue
            archive = MmapedDict(str(directory / f"{kind}_{ARCHIVE}.db"))
            try:
                for path in sources:
                    for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(str(path)):
                        archive.write_value(key, archive.read_value(key)[0] + value, 0.0)
                    path.unlink()
                    folded += 1
            finally:
                archive.close()
        for path in directory.glob("gauge_*.db"):
            if _exited(path, pids):
                multiprocess.mark_process_dead(int(path.stem.rsplit("_", 1)[1]), str(directory))
    return folded


def _exited(path: Path, pids: set[int] | None) -> bool:
    tail = path.stem.rsplit("_", 1)[-1]
    if not tail.isdigit():
        return False  # the archive
    pid = int(tail)
    if pids is not None:
        return pid in pids
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class DatabaseCollector:
    """Gauges from one grouped query (`store.summary`) at scrape time, whatever the table size."""

    def __init__(self, sessions, metrics: Metrics, *, now=utcnow):
        self.sessions = sessions
        self.metrics = metrics
        self.now = now

    def collect(self):
        """The four database gauges, or none at all when the read fails."""
        try:
            with self.sessions.begin() as session:
                data = store.summary(session, now=self.now())
        except SQLAlchemyError as exc:  # classified: counted and logged; the series are left out, never zero
            log.warning("metrics: database read failed (%s); notification gauges left out", type(exc).__name__)
            self.metrics.collect_errors.labels("database").inc()
            return []
        statuses = GaugeMetricFamily("certctl_notifications", "Notifications by status now (read from the "
                                     "database at scrape time).", labels=["status"])
        for status, count in data["counts"].items():
            statuses.add_metric([status], count)
        return [
            statuses,
            GaugeMetricFamily("certctl_notification_dead_total", "Dead notifications now. A GAUGE despite its "
                              "name, kept for the original dashboards: it falls on requeue. For a counter use "
                              "certctl_notification_dead_transitions_total.", value=data["counts"]["dead"]),
            GaugeMetricFamily("certctl_notification_oldest_pending_seconds", "Age of the oldest pending "
                              "notification (0 when none is pending).", value=data["oldest_pending_seconds"]),
            GaugeMetricFamily("certctl_notification_retries_due", "Failed notifications whose next retry time "
                              "has passed.", value=data["retries_due"]),
        ]


class QueueCollector:
    """``certctl_celery_queue_length{queue}`` from a Redis or RabbitMQ broker; the embedded SQLite broker
    omits it."""

    def __init__(self, broker_url: str, metrics: Metrics, *, sentinel_master: str | None = None):
        self.metrics = metrics
        self.broker_url = broker_url
        self.client = (redis_client(broker_url, timeout=BROKER_TIMEOUT_SECONDS, sentinel_master=sentinel_master)
                       if is_redis_tcp(broker_url) else None)

    def collect(self):
        """One ``LLEN`` per queue in one round trip (Redis), a passive declare each (RabbitMQ), or no
        series when the broker does not answer."""
        if self.client is None and not is_amqp(self.broker_url):
            return []
        try:
            lengths = self._redis_lengths() if self.client is not None else self._amqp_lengths()
        except Exception as exc:  # classified: counted and logged; series left out
            log.warning("metrics: broker read failed (%s); queue lengths left out", type(exc).__name__)
            self.metrics.collect_errors.labels("broker").inc()
            return []
        family = GaugeMetricFamily("certctl_celery_queue_length", "Messages waiting in each Celery queue on "
                                   "the broker (messages a worker holds unacknowledged are not counted).",
                                   labels=["queue"])
        for queue in QUEUES:
            family.add_metric([queue], lengths[queue])
        return [family]

    def _redis_lengths(self) -> dict[str, int]:
        with self.client.pipeline(transaction=False) as pipe:
            for queue in QUEUES:
                pipe.llen(queue)
            return dict(zip(QUEUES, pipe.execute(), strict=True))

    def _amqp_lengths(self) -> dict[str, int]:
        with Connection(self.broker_url, connect_timeout=BROKER_TIMEOUT_SECONDS,
                        transport_options={"socket_timeout": BROKER_TIMEOUT_SECONDS}) as conn:
            conn.ensure_connection(max_retries=0)
            return amqp_queue_lengths(conn)


class _SharedDirectory:
    """The counters of every process that wrote under the metrics directory (or under one role directory
    of it), added up."""

    def __init__(self, root: Path, pattern: str = "*/"):
        self.root = Path(root)
        self.pattern = pattern

    def collect(self):
        directories = [d for d in self.root.glob(self.pattern) if d.is_dir()]
        with contextlib.ExitStack() as stack:
            for directory in directories:
                stack.enter_context(_fold_lock(directory, exclusive=False))
            return multiprocess.MultiProcessCollector.merge([str(p) for d in directories for p in d.glob("*.db")])


def scrape_registry(sessions, broker_url: str, metrics: Metrics, metrics_dir: Path | None, *,
                    sentinel_master: str | None = None) -> CollectorRegistry:
    """What ``GET /metrics`` exposes: the gauges, then the counters of every process sharing
    ``metrics_dir`` (or of this process alone when it is None)."""
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(sessions, metrics))  # first: its error count shows in the same scrape
    registry.register(QueueCollector(broker_url, metrics, sentinel_master=sentinel_master))
    registry.register(_SharedDirectory(metrics_dir) if metrics_dir is not None else metrics.registry)
    return registry


def serve_worker_metrics(root: Path, port: int, addr: str = "0.0.0.0") -> None:
    """Serve this host's worker counters (every pool process, past ones folded in) on ``port``: a
    per-host scrape target where no directory is shared with the API. A thread of this process."""
    registry = CollectorRegistry()
    registry.register(_SharedDirectory(root, pattern=process_directory(root, "worker").name + "/"))
    start_http_server(port, addr=addr, registry=registry)


def for_process(metrics_dir: Path | None, role: str) -> Metrics:
    """This process's `Metrics`: multiprocess under ``metrics_dir`` when set (the directory is not emptied)."""
    if metrics_dir is not None:
        enable_multiprocess(metrics_dir, role, fold=False)
    return Metrics()
