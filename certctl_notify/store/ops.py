"""Operator records: the audit log and bulk requeue jobs."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Row, func, select, update

from certctl_notify.model import JobStatus, audit_log, events, requeue_jobs
from certctl_notify.store import statements
from certctl_notify.store.reads import NotificationFilter, filter_clauses

__all__ = [
    "add_audit", "list_audit", "insert_job", "get_job", "running_job", "job_batch_ids", "advance_job",
    "finish_job", "cancel_job", "take_over_stalled_jobs", "count_matching",
]


def add_audit(session: Connection, *, at: datetime, actor: str, action: str, target: str, detail: dict | None = None,
              request_id: str | None = None) -> None:
    session.execute(statements.insert_audit(), {"at": at, "actor": actor, "action": action, "target": target,
                                                "detail": detail, "request_id": request_id})


def list_audit(session: Connection, *, page: int, per_page: int) -> tuple[int, Sequence[Row]]:
    total = session.execute(select(func.count()).select_from(audit_log)).scalar_one()
    rows = session.execute(select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
                           .limit(per_page).offset((page - 1) * per_page)).all()
    return total, rows


def count_matching(session: Connection, f: NotificationFilter, *, unchanged_since: datetime | None = None) -> int:
    where = filter_clauses(f)
    if unchanged_since is not None:
        where.append(events.c.updated_at <= unchanged_since)
    return session.execute(select(func.count()).select_from(events).where(*where)).scalar_one()


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
                skipped=func.greatest(requeue_jobs.c.matched - requeue_jobs.c.requeued, requeue_jobs.c.skipped)
                if session.dialect.name == "postgresql"
                else func.max(requeue_jobs.c.matched - requeue_jobs.c.requeued, requeue_jobs.c.skipped))
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
