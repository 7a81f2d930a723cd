"""Bulk requeue jobs: their progress, their owner (the generation of the chain of chunk messages that
works on each), and the rows they work through."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, Row, select, update

from certctl_notify.model import JobStatus, events, requeue_jobs
from certctl_notify.store.dialect import greatest
from certctl_notify.store.listing import NotificationFilter, filter_clauses


def insert_job(session: Connection, *, job_id: str, filter: dict, rate: float, matched: int, cutoff: datetime,
               actor: str, now: datetime) -> Row:
    return session.execute(requeue_jobs.insert().values(
        id=job_id, filter=filter, status=JobStatus.RUNNING.value, rate_per_second=rate, matched=matched,
        requeued=0, skipped=0, cutoff=cutoff, actor=actor, created_at=now, updated_at=now,
    ).returning(*requeue_jobs.c)).one()


def get_job(session: Connection, job_id: str) -> Row | None:
    return session.execute(select(requeue_jobs).where(requeue_jobs.c.id == job_id)).first()


def running_job(session: Connection) -> Row | None:
    return session.execute(select(requeue_jobs).where(requeue_jobs.c.status == JobStatus.RUNNING.value)
                           .order_by(requeue_jobs.c.created_at).limit(1)).first()


def job_batch_ids(session: Connection, f: NotificationFilter, *, after: str | None, cutoff: datetime,
                  limit: int) -> list[str]:
    """The next ``limit`` matching rows in id order that have not changed since the job began."""
    where = [*filter_clauses(f), events.c.updated_at <= cutoff]
    if after is not None:
        where.append(events.c.id > after)
    return list(session.execute(select(events.c.id).where(*where).order_by(events.c.id).limit(limit)).scalars())


def _owned(job_id: str, generation: int) -> tuple:
    """The job is still running and still this chain's (not cancelled, not taken over by the sweep)."""
    return (requeue_jobs.c.id == job_id, requeue_jobs.c.status == JobStatus.RUNNING.value,
            requeue_jobs.c.generation == generation)


def advance_job(session: Connection, job_id: str, *, generation: int, cursor: str, requeued: int, skipped: int,
                now: datetime) -> Row | None:
    """Record progress; None when the job is no longer this chain's (cancelled or taken over meanwhile)."""
    return session.execute(
        update(requeue_jobs)
        .where(*_owned(job_id, generation))
        .values(cursor=cursor, requeued=requeue_jobs.c.requeued + requeued,
                skipped=requeue_jobs.c.skipped + skipped, updated_at=now)
        .returning(*requeue_jobs.c)
    ).first()


def finish_job(session: Connection, job_id: str, *, generation: int, now: datetime) -> Row | None:
    """Done: every matched row not requeued was skipped because it changed state meanwhile."""
    return session.execute(
        update(requeue_jobs)
        .where(*_owned(job_id, generation))
        .values(status=JobStatus.DONE.value, updated_at=now, finished_at=now,
                skipped=greatest(requeue_jobs.c.matched - requeue_jobs.c.requeued, requeue_jobs.c.skipped))
        .returning(*requeue_jobs.c)
    ).first()


def cancel_job(session: Connection, job_id: str, *, now: datetime) -> Row | None:
    return session.execute(
        update(requeue_jobs)
        .where(requeue_jobs.c.id == job_id, requeue_jobs.c.status == JobStatus.RUNNING.value)
        .values(status=JobStatus.CANCELLED.value, updated_at=now, finished_at=now)
        .returning(*requeue_jobs.c)
    ).first()


def take_over_stalled_jobs(session: Connection, *, older_than: datetime, now: datetime) -> list[tuple[str, int]]:
    """Running jobs that made no progress since ``older_than`` (their worker died, or their next chunk
    waits behind a busy queue), each taken over by a new generation: (job id, generation) to resume.
    A chunk of an older generation that runs later finds the job no longer its own and stops."""
    return [tuple(row) for row in session.execute(
        update(requeue_jobs)
        .where(requeue_jobs.c.status == JobStatus.RUNNING.value, requeue_jobs.c.updated_at < older_than)
        .values(generation=requeue_jobs.c.generation + 1, updated_at=now)
        .returning(requeue_jobs.c.id, requeue_jobs.c.generation)
    ).all()]
