"""The data model: statuses, allowed transitions, and every table (notifications, attempts, audit log,
bulk requeue jobs).

Column names are kept from the original schema so existing dashboards and SQL keep working.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# The enums live in vocabulary.py (no imports: the command line offers their values without loading
# SQLAlchemy) and are re-exported here, beside the tables that use them.
from certctl_notify.vocabulary import AlertType, Channel, JobStatus, Outcome, Severity, Status  # noqa: F401

#: Every state change, as (statuses it may start from, status it ends in). The store turns each
#: into one ``UPDATE … WHERE status IN (…)``; nothing else changes a status.
TRANSITIONS: dict[str, tuple[frozenset[Status], Status]] = {
    "deliver_sent": (frozenset({Status.PENDING, Status.FAILED}), Status.SENT),
    "deliver_retry": (frozenset({Status.PENDING, Status.FAILED}), Status.FAILED),
    "deliver_dead": (frozenset({Status.PENDING, Status.FAILED}), Status.DEAD),
    "requeue": (frozenset({Status.DEAD, Status.FAILED}), Status.PENDING),
    # Read acknowledges a delivered alert or dismisses a dead letter; on pending or failed rows it
    # would silently cancel a delivery, so it is refused there.
    "mark_read": (frozenset({Status.SENT, Status.DEAD}), Status.READ),
}


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on PostgreSQL (timestamptz) and on SQLite (naive text)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def utcnow() -> datetime:
    return datetime.now(UTC)


NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


_STATUS_VALUES = ", ".join(f"'{s.value}'" for s in Status)


class NotificationEvent(Base):
    """One alert to one channel: the unit that is delivered, retried, dead-lettered and requeued."""

    __tablename__ = "notification_events"

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    type: Mapped[str] = mapped_column(Text)
    certificate_id: Mapped[str | None] = mapped_column(Text)
    channel: Mapped[str] = mapped_column(Text)
    recipient: Mapped[str] = mapped_column(Text, server_default="")
    subject: Mapped[str | None] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    severity: Mapped[str] = mapped_column(Text, server_default=Severity.WARNING.value)
    status: Mapped[str] = mapped_column(Text, server_default=Status.PENDING.value)
    retry_count: Mapped[int] = mapped_column(Integer, server_default="0")
    next_retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("CURRENT_TIMESTAMP"))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, server_default=text("CURRENT_TIMESTAMP"))
    #: the producer's idempotency key: one key names one alert per channel (unique with ``channel``)
    dedupe_key: Mapped[str | None] = mapped_column(Text)
    # Not in the original schema: when a delivery task was last published for this row (the sweep's
    # clock for "published but never picked up"), and the claim lease of the attempt in progress.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status"),
        UniqueConstraint("dedupe_key", "channel"),
        Index(
            "idx_notification_events_retry_sweep",
            "next_retry_at",
            postgresql_where=text("status = 'failed' AND next_retry_at IS NOT NULL"),
            sqlite_where=text("status = 'failed' AND next_retry_at IS NOT NULL"),
        ),
        Index(
            "idx_notification_events_pending_sweep",
            "dispatched_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
        Index("idx_notification_events_status_created", "status", "created_at", "id"),
        # Retention picks each batch of rows past their age from this (store/retention.py), never by a scan.
        Index("idx_notification_events_status_updated", "status", "updated_at"),
        Index("idx_notification_events_created", "created_at", "id"),
        Index("idx_notification_events_certificate_id", "certificate_id"),
        Index("idx_notification_events_channel_created", "channel", "created_at", "id"),
        Index("idx_notification_events_type_created", "type", "created_at", "id"),
        # newest first among the rows that have an error: what a search in last_error (q) walks
        Index("idx_notification_events_errors", "created_at", "id",
              postgresql_where=text("last_error IS NOT NULL"), sqlite_where=text("last_error IS NOT NULL")),
    )


class NotificationAttempt(Base):
    """One delivery attempt: the audit trail of why each attempt failed and which one delivered."""

    __tablename__ = "notification_attempts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    notification_id: Mapped[str] = mapped_column(
        Text, ForeignKey("notification_events.id", ondelete="CASCADE"), index=True
    )
    attempt: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str | None] = mapped_column(String(16))
    error_class: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int | None] = mapped_column(Integer)
    worker: Mapped[str | None] = mapped_column(Text)
    task_id: Mapped[str | None] = mapped_column(Text)
    #: the row's channel, copied when the attempt opens, so counting attempts per channel reads no row
    channel: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("outcome IS NULL OR outcome IN ('sent', 'retry', 'dead')", name="outcome"),
        CheckConstraint(
            "error_class IS NULL OR error_class IN ('transient', 'permanent')", name="error_class"
        ),
        # The console's per-hour activity reads only the last day's attempts (store/activity.py).
        Index("idx_notification_attempts_finished", "finished_at"),
    )


# --- operator records ---------------------------------------------------------------------------


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


# --- counts maintained by triggers (migration 0008) -------------------------------------------


class StatusCount(Base):
    """Rows per status, kept by triggers on notification_events; add the unfolded deltas to read."""

    __tablename__ = "notification_status_counts"

    status: Mapped[str] = mapped_column(Text, primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, server_default="0")


class StatusCountDelta(Base):
    """A change of the counts not yet folded into `StatusCount` (PostgreSQL: appended, never locked)."""

    __tablename__ = "notification_status_deltas"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    status: Mapped[str] = mapped_column(Text)
    n: Mapped[int] = mapped_column(BigInteger)


class AttemptHourly(Base):
    """Attempts that finished per UTC hour, channel and outcome, kept by triggers (PostgreSQL; migration 0011)."""

    __tablename__ = "attempt_hourly"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    channel: Mapped[str] = mapped_column(Text, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger)


class AttemptHourlyDelta(Base):
    """Finished attempts not yet folded into `AttemptHourly` (appended, never locked)."""

    __tablename__ = "attempt_hourly_deltas"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime)
    channel: Mapped[str] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(String(16))
    n: Mapped[int] = mapped_column(BigInteger)


events = NotificationEvent.__table__
attempts = NotificationAttempt.__table__
audit_log = AuditEntry.__table__
requeue_jobs = RequeueJob.__table__
status_counts = StatusCount.__table__
status_deltas = StatusCountDelta.__table__
attempt_hourly = AttemptHourly.__table__
attempt_hourly_deltas = AttemptHourlyDelta.__table__
