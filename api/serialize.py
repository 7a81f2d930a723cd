"""Rows to JSON: one shape for every endpoint that returns a notification or an attempt."""

from __future__ import annotations

from datetime import datetime

EVENT_FIELDS = (
    "id", "type", "certificate_id", "channel", "recipient", "subject", "message", "severity", "status",
    "retry_count", "next_retry_at", "last_error", "sent_at", "created_at", "updated_at", "dedupe_key",
)
ATTEMPT_FIELDS = (
    "attempt", "started_at", "finished_at", "outcome", "error_class", "error", "status_code", "duration_ms",
    "worker", "task_id",
)


def _value(value):
    return value.isoformat() if isinstance(value, datetime) else value


def notification(row, *, max_attempts: int) -> dict:
    data = {name: _value(getattr(row, name)) for name in EVENT_FIELDS}
    data["max_attempts"] = max_attempts
    return data


def attempt(row) -> dict:
    return {name: _value(getattr(row, name)) for name in ATTEMPT_FIELDS}
