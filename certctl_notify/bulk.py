"""Bulk requeue: a job that requeues the rows a filter matched, in id order, at a bounded rate, so a
requeue of 100k dead rows cannot flood a receiver that has just recovered.

A rate of 0 means no limit: the job then works in batches of `UNTHROTTLED_BATCH` without pausing.
Each batch is still one short transaction that skips rows changed since the job began, records the
job's progress and finds out whether the job was cancelled meanwhile.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime

from sqlalchemy import Row

from certctl_notify import store
from certctl_notify.audit import Actor, record_audit
from certctl_notify.db import Transactions
from certctl_notify.errors import JobConflict
from certctl_notify.metrics import NO_METRICS, Recorder
from certctl_notify.model import utcnow
from certctl_notify.publish import Dispatcher, dispatch_many_quietly
from certctl_notify.store.listing import NotificationFilter

log = logging.getLogger(__name__)

#: Seconds one task run works before handing over to the next (well inside the task time limit).
CHUNK_SECONDS = 5.0
#: Batches per second; each batch is one short transaction.
BATCHES_PER_SECOND = 10
#: Rows per batch of a job without a rate limit (rate 0).
UNTHROTTLED_BATCH = 1000


class _Cancelled(Exception):
    """Rolls back a batch whose job was cancelled, or taken over by a newer chain, while it ran."""


def _serialisable(f: NotificationFilter) -> dict:
    data = asdict(f)
    for key in ("created_after", "created_before", "as_of"):
        if data[key] is not None:
            data[key] = data[key].isoformat()
    data["statuses"], data["ids"] = list(f.statuses), list(f.ids)
    return data


def _filter_of(job: Row) -> NotificationFilter:
    data = dict(job.filter)
    for key in ("created_after", "created_before", "as_of"):
        if data.get(key):
            data[key] = datetime.fromisoformat(data[key])
    data["statuses"], data["ids"] = tuple(data["statuses"]), tuple(data["ids"])
    return NotificationFilter(**data)


def count(sessions: Transactions, f: NotificationFilter) -> int:
    """How many rows a bulk requeue with this filter would requeue now (the dry run)."""
    with sessions.begin() as session:
        return store.count_matching(session, f)


def start(sessions: Transactions, dispatcher: Dispatcher, f: NotificationFilter, *, rate: float,
          actor: Actor, now: Callable[[], datetime] = utcnow) -> Row:
    """Create the job (matched = rows unchanged since now) with its audit entry in one transaction,
    then publish its first chunk.

    Raises:
        JobConflict: another bulk requeue is still running.
    """
    moment = now()
    with sessions.begin() as session:
        running = store.running_job(session)
        if running is not None:
            raise JobConflict(f"bulk requeue {running.id} is still running; cancel it or wait for it")
        matched = store.count_matching(session, f, unchanged_since=moment)
        job = store.insert_job(session, job_id=f"job_{uuid.uuid4().hex}", filter=_serialisable(f), rate=rate,
                               matched=matched, cutoff=moment, actor=actor.name, now=moment)
        record_audit(session, actor, "bulk_requeue", job.id, moment, {"matched": job.matched, "filter": job.filter})
    log.info("bulk requeue %s by %s: %d rows at %s", job.id, actor.name, matched,
             f"{rate:g}/s" if rate > 0 else "no rate limit")
    try:
        dispatcher.run_requeue_job(job.id, job.generation)
    except Exception as exc:  # classified: the sweep resumes a job that makes no progress
        log.warning("publish of bulk requeue %s failed (%s); the sweep will resume it", job.id, exc)
    return job


def run_chunk(sessions: Transactions, dispatcher: Dispatcher, job_id: str, generation: int = 0, *,
              chunk_seconds: float = CHUNK_SECONDS, now: Callable[[], datetime] = utcnow,
              sleep: Callable[[float], None] = time.sleep, metrics: Recorder = NO_METRICS) -> bool:
    """Work on a job for about ``chunk_seconds`` as the chain of ``generation``; True when it has more
    to do. A chain the sweep has taken over (a newer generation owns the job) stops at once."""
    with sessions.begin() as session:
        job = store.get_job(session, job_id)
    if job is None or job.status != "running" or job.generation != generation:
        return False
    f, rate = _filter_of(job), job.rate_per_second
    batch = max(1, int(rate / BATCHES_PER_SECOND)) if rate > 0 else UNTHROTTLED_BATCH
    cursor, started = job.cursor, time.monotonic()
    while time.monotonic() - started < chunk_seconds:
        batch_started = time.monotonic()
        moment = now()
        try:
            with sessions.begin() as session:
                ids = store.job_batch_ids(session, f, after=cursor, cutoff=job.cutoff, limit=batch)
                if not ids:
                    store.finish_job(session, job_id, generation=generation, now=moment)
                    log.info("bulk requeue %s done", job_id)
                    return False
                requeued = store.requeue_many(session, ids, now=moment, unchanged_since=job.cutoff)
                if store.advance_job(session, job_id, generation=generation, cursor=ids[-1],
                                     requeued=len(requeued), skipped=len(ids) - len(requeued), now=moment) is None:
                    raise _Cancelled
        except _Cancelled:  # cancelled or taken over meanwhile: this batch is rolled back
            log.info("bulk requeue %s: cancelled, or taken over by a newer chain; this one stops", job_id)
            return False
        metrics.requeued("bulk", len(requeued))
        dispatch_many_quietly(dispatcher, requeued, 1, moment)
        cursor = ids[-1]
        if rate > 0:  # pace: this batch may take len(ids)/rate seconds at the most
            sleep(max(0.0, len(ids) / rate - (time.monotonic() - batch_started)))
    return True
