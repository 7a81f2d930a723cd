"""The sweep: PostgreSQL is the source of truth, so whatever the broker lost is found here again.

It tells lost from slow: a pending row whose delivery message still waits in a backlog is not
re-published (that would only lengthen the queue when it is longest). Delivery messages carry the
``dispatched_at`` their row was given; messages leave the queue oldest first, so a never-claimed row
dispatched before the oldest message still queued has lost its message, and one dispatched at or
after it may still be waiting. Once the backlog clears, every lost row is re-published within the grace.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from certctl_notify import store
from certctl_notify.db import Transactions
from certctl_notify.metrics import NO_METRICS, Recorder
from certctl_notify.model import utcnow
from certctl_notify.publish import Dispatcher, dispatch_quietly
from certctl_notify.settings import SweepSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepReport:
    locked_out: bool = False  #: another sweep held the lock; this tick did nothing
    redispatched: dict[str, int] = field(default_factory=dict)  #: by reason: overdue, stale_pending, abandoned
    publish_failures: int = 0
    queued_since: datetime | None = None  #: stamp of the oldest delivery message still queued, if known

    @property
    def total(self) -> int:
        return sum(self.redispatched.values())


def _reason(row) -> str:
    # Due rows hold no live lease (by the database's clock): one still set ran out mid-attempt.
    if row.lease_expires_at is not None:
        return "abandoned"
    return "overdue" if row.status == "failed" else "stale_pending"


def sweep_once(
    sessions: Transactions,
    dispatcher: Dispatcher,
    settings: SweepSettings,
    *,
    now: Callable[[], datetime] = utcnow,
    metrics: Recorder = NO_METRICS,
) -> SweepReport:
    """Re-dispatch up to ``batch_size`` rows the broker should have delivered by now.

    The rows are chosen and stamped as dispatched under the sweep lock in one transaction; the
    messages are published after it commits. A duplicate that races the broker's own retry is
    harmless: the claim lets only one execution make each attempt.
    """
    moment = now()
    queued_since = _oldest_queued(dispatcher)
    with sessions.begin() as session:
        if not store.try_sweep_lock(session):
            log.info("sweep skipped: another sweep is running")
            return SweepReport(locked_out=True)
        rows = store.due_for_redispatch(session, now=moment, grace_seconds=settings.grace_seconds,
                                        limit=settings.batch_size, queued_since=queued_since)
        store.mark_dispatched(session, (r.id for r in rows), now=moment)
        stalled = store.take_over_stalled_jobs(
            session, older_than=moment - timedelta(seconds=max(settings.grace_seconds, 30)), now=moment)
    for job_id, generation in stalled:  # a bulk requeue whose chain stopped or waits: resume it from its cursor
        log.info("sweep resumes bulk requeue %s (generation %d)", job_id, generation)
        try:
            dispatcher.run_requeue_job(job_id, generation)
        except Exception as exc:  # classified: the next tick tries again
            log.warning("resuming bulk requeue %s failed: %s", job_id, exc)
    reasons: Counter[str] = Counter()
    failures = 0
    for row in rows:
        if dispatch_quietly(dispatcher, row.id, row.retry_count + 1, moment):
            reasons[_reason(row)] += 1
        else:
            failures += 1
    metrics.redispatched(reasons)
    if rows:
        log.info("sweep re-dispatched %d rows %s (%d publish failures)", sum(reasons.values()), dict(reasons), failures)
    if queued_since is not None:
        log.info("sweep: the delivery queue has a backlog (oldest message dispatched %s); rows dispatched since "
                 "then are waiting in it, not lost", queued_since.isoformat())
    return SweepReport(redispatched=dict(reasons), publish_failures=failures, queued_since=queued_since)


def _oldest_queued(dispatcher: Dispatcher) -> datetime | None:
    """The oldest queued delivery's stamp; None (the grace alone decides) when it cannot be read."""
    try:
        return dispatcher.oldest_queued_dispatch()
    except Exception as exc:  # classified: a broker we cannot look at must not stop the sweep
        log.warning("sweep: cannot look at the delivery queue (%s: %s); using the grace alone",
                    type(exc).__name__, exc)
        return None
