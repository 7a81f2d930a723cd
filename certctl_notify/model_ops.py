"""Operator-side tables: the audit trail of admin actions and bulk requeue jobs."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import JSON, BigInteger, CheckConstraint, Float, Index, Integer, Text
from sqlalchemy.orm import Mapped, mapped_column

from certctl_notify.model import Base, UTCDateTime


class JobStatus(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"


class AuditEntry(Base):
    """One admin action: who (the API key's name), what, on which target, when."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)  #: enqueue, requeue, bulk_requeue, mark_read, cancel_requeue_job
    target: Mapped[str] = mapped_column(Text)  #: a notification id or a job id
    detail: Mapped[dict | None] = mapped_column(JSON)
    request_id: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (Index("idx_audit_log_at", "at", "id"),)


class RequeueJob(Base):
    """A bulk requeue working through its matched rows in id order at a bounded rate."""

    __tablename__ = "requeue_jobs"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    filter: Mapped[dict] = mapped_column(JSON)
    status: Mapped[str] = mapped_column(Text)
    rate_per_second: Mapped[float] = mapped_column(Float)
    matched: Mapped[int] = mapped_column(Integer, server_default="0")  #: rows the filter matched at creation
    requeued: Mapped[int] = mapped_column(Integer, server_default="0")
    skipped: Mapped[int] = mapped_column(Integer, server_default="0")  #: changed state meanwhile
    cursor: Mapped[str | None] = mapped_column(Text)  #: last notification id processed
    #: the chain of chunk messages that owns the job; the sweep takes a stalled job over by raising it
    generation: Mapped[int] = mapped_column(Integer, server_default="0")
    cutoff: Mapped[datetime] = mapped_column(UTCDateTime)  #: rows last changed after this are not touched
    actor: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint("status IN ('running', 'done', 'cancelled')", name="status"),
    )


audit_log = AuditEntry.__table__
requeue_jobs = RequeueJob.__table__
