"""The channel contract: turn one notification into one request and say what happened."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

from certctl_notify.errors import ChannelNotConfigured


@dataclass(frozen=True)
class Notification:
    """What a channel needs to know about one alert (read fresh from the row for each attempt)."""

    id: str
    type: str
    channel: str
    recipient: str
    subject: str
    message: str
    severity: str
    certificate_id: str | None
    created_at: datetime
    attempt: int

    @classmethod
    def from_row(cls, row, attempt: int) -> Notification:
        return cls(
            id=row.id, type=row.type, channel=row.channel, recipient=row.recipient or "",
            subject=row.subject or row.type, message=row.message, severity=row.severity or "warning",
            certificate_id=row.certificate_id, created_at=row.created_at, attempt=attempt,
        )


@dataclass(frozen=True)
class Sent:
    """A delivered attempt: the peer's reply code and a short detail for the audit trail."""

    status_code: int | None = None
    detail: str = ""


@runtime_checkable
class Channel(Protocol):
    """One adapter per channel. ``send`` returns `Sent` or raises `TransientError`/`PermanentError`."""

    name: str

    def send(self, notification: Notification) -> Sent: ...


class UnconfiguredChannel:
    """Stands in for a channel whose settings are missing: every send is a permanent error that
    names the variable to set. Never a success."""

    def __init__(self, name: str, variable: str):
        self.name = name
        self.variable = variable

    def send(self, notification: Notification) -> Sent:
        raise ChannelNotConfigured(f"channel {self.name} is not configured (set {self.variable})")
