"""Retention: delivered and dead notifications are deleted, with their attempts, once past their age.

Sent and read rows whose last change is older than ``CERTCTL_RETENTION_DELIVERED`` (30 days) and dead
rows older than ``CERTCTL_RETENTION_DEAD`` (90 days) go; ``0`` keeps a class for ever. Pending and
failed rows are alerts still to be delivered and are never deleted, however old (the statement
itself says so: `store.retention.PURGEABLE`).

Age is counted from ``updated_at``, the time the row reached its final state, not from
``created_at``: an alert that took a week of retries and requeues to go out, or a dead letter an
operator requeued a month after it was created and that died again yesterday, is as recent as its
last change, and must stay visible (and requeueable, or readable in the console) for the full period
from then. ``sent_at`` would do for sent rows only; read and dead rows have no such column.

Each batch is one short transaction that deletes at most ``CERTCTL_RETENTION_BATCH`` rows (1,000),
chosen oldest first from the index (status, updated_at), skipping rows another transaction holds; a
run pauses between batches (as long as the batch itself took) so that intake and delivery keep most
of the database, and stops when nothing is due or its time budget is spent (the next run goes on).

A purge forgets what it deletes: an alert sent again with the ``dedupe_key`` of a purged row is a
new alert, so producers' keys are remembered for the retention period only.

Partitioning ``notification_attempts`` by time (dropping a month's partition instead of deleting
rows) was considered and not done, for now. Attempts go when their notification goes (the foreign
key's ON DELETE CASCADE), and that is decided by the notification's last change, not by when the
attempt was made: a dead letter requeued in March keeps its January attempts, so no month of attempts
can be dropped as a whole, and deleting notifications would still delete their attempts row by row
across partitions. Partitioning both tables by the notification's month would let whole months go, but
only once every row of the month is past its retention (one failed or pending row holds it back), and
makes the partition key part of both primary keys and of the foreign key. SQLite, the embedded mode,
has no partitioning at all. Deleting in batches through the index costs in proportion to what goes
(about 40,000 rows a second with an attempt each, in tests/core/test_retention.py), so a year of
alerts goes in minutes; when that stops being true, partition both tables together.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from certctl_notify import store
from certctl_notify.db import Transactions
from certctl_notify.metrics import NO_METRICS, Recorder
from certctl_notify.model import Status, utcnow
from certctl_notify.settings import RetentionSettings

log = logging.getLogger(__name__)

#: Longest a scheduled purge works in one run, in seconds (the worker also caps it at half the task
#: time limit); what is left is purged by the next run.
PURGE_BUDGET_SECONDS = 60.0
#: Pause after each batch, as a fraction of the time the batch took: 1.0 leaves the database to
#: everyone else at least half the time.
PAUSE_FACTOR = 1.0


@dataclass(frozen=True)
class PurgeReport:
    purged: dict[str, int] = field(default_factory=dict)  #: rows deleted (or due, in a dry run) by status
    kept: tuple[str, ...] = ()  #: statuses whose retention is 0 (kept for ever)
    batches: int = 0  #: transactions that deleted rows (or found none left)
    seconds: float = 0.0  #: wall time of the run, pauses included
    finished: bool = True  #: False when the time budget ran out, or ``stop`` said so, with rows maybe still due
    stopped: bool = False  #: ``stop()`` ended the run (an operator's Ctrl-C), not the budget

    @property
    def total(self) -> int:
        return sum(self.purged.values())


def _ages(settings: RetentionSettings) -> dict[str, float]:
    return {Status.SENT.value: settings.delivered_seconds, Status.READ.value: settings.delivered_seconds,
            Status.DEAD.value: settings.dead_seconds}


def cutoffs(settings: RetentionSettings, now: datetime) -> dict[str, datetime]:
    """For each status that is purged, the time before which a row's last change makes it due."""
    return {status: now - timedelta(seconds=age) for status, age in _ages(settings).items() if age > 0}


def _kept(settings: RetentionSettings) -> tuple[str, ...]:
    return tuple(status for status, age in _ages(settings).items() if age <= 0)


def count_due(sessions: Transactions, settings: RetentionSettings, *,
              now: Callable[[], datetime] = utcnow) -> PurgeReport:
    """What a purge would delete now, by status (the dry run); changes nothing."""
    with sessions.begin() as session:
        due = {status: store.count_purgeable(session, status, before=before)
               for status, before in cutoffs(settings, now()).items()}
    return PurgeReport(purged=due, kept=_kept(settings))


def purge(sessions: Transactions, settings: RetentionSettings, *, budget_seconds: float | None = None,
          pause_factor: float = PAUSE_FACTOR, now: Callable[[], datetime] = utcnow,
          sleep: Callable[[float], None] = time.sleep, metrics: Recorder = NO_METRICS,
          on_batch: Callable[[str, int], None] | None = None,
          stop: Callable[[], bool] | None = None) -> PurgeReport:
    """Delete every row past its retention, a batch per transaction, the statuses taking turns.

    Parameters:
        budget_seconds: stop starting batches after this many seconds (None: go on until nothing is
            due); the batch under way finishes, so a run lasts at most the budget plus one batch.
        pause_factor: pause after each batch for this multiple of the batch's own duration.
        on_batch: called after each batch commits with (status, rows it deleted), e.g. for a progress bar.
        stop: asked before each batch; True ends the run there (the batches done stay committed), as
            the command's Ctrl-C does.

    The cutoffs are fixed when the run starts, so rows that age meanwhile wait for the next run and a
    run always ends.
    """
    started = time.monotonic()
    due = cutoffs(settings, now())
    after: dict[str, datetime | None] = dict.fromkeys(due)
    purged: Counter[str] = Counter({status: 0 for status in due})
    batches = 0
    while after:
        for status in list(after):
            if budget_seconds is not None and time.monotonic() - started >= budget_seconds:
                return _report(purged, settings, batches, started, finished=False)
            if stop is not None and stop():
                return _report(purged, settings, batches, started, finished=False, stopped=True)
            batch_started = time.monotonic()
            with sessions.begin() as session:
                deleted = store.purge_batch(session, status, before=due[status], after=after[status],
                                            limit=settings.batch_size)
            batches += 1
            purged[status] += len(deleted)
            metrics.purged({status: len(deleted)})
            if on_batch is not None:
                on_batch(status, len(deleted))
            if len(deleted) < settings.batch_size:
                del after[status]  # the rest of this status is younger, or held by another transaction
            else:
                after[status] = max(deleted)
            if after:
                sleep((time.monotonic() - batch_started) * pause_factor)
    return _report(purged, settings, batches, started, finished=True)


def _report(purged: Counter[str], settings: RetentionSettings, batches: int, started: float, *,
            finished: bool, stopped: bool = False) -> PurgeReport:
    report = PurgeReport(purged=dict(purged), kept=_kept(settings), batches=batches,
                         seconds=time.monotonic() - started, finished=finished, stopped=stopped)
    if report.total or not finished:
        why = "" if finished else "; stopped on request" if stopped else "; time budget spent, the next run goes on"
        log.info("retention purged %d rows %s in %d batches, %.1f s%s", report.total, report.purged, batches,
                 report.seconds, why)
    return report
