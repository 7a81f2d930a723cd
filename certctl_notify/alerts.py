"""Validation of producer input: one `Alert` per request, checked field by field at the edge."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from certctl_notify.errors import ValidationError
from certctl_notify.model import AlertType, Channel, Severity, Status

#: Field length limits, in characters.
MAX_MESSAGE_CHARS = 100_000
MAX_SUBJECT_CHARS = 500
MAX_RECIPIENT_CHARS = 320
MAX_KEY_CHARS = 255

FIELDS = frozenset(
    {"type", "channel", "channels", "recipient", "subject", "message", "severity", "certificate_id", "dedupe_key"}
)

#: Severity an alert gets when the producer names none.
DEFAULT_SEVERITY = {
    AlertType.EXPIRATION_WARNING: Severity.WARNING,
    AlertType.RENEWAL_SUCCESS: Severity.INFO,
    AlertType.RENEWAL_FAILURE: Severity.ERROR,
    AlertType.DEPLOYMENT_SUCCESS: Severity.INFO,
    AlertType.DEPLOYMENT_FAILURE: Severity.ERROR,
    AlertType.POLICY_VIOLATION: Severity.WARNING,
    AlertType.REVOCATION: Severity.CRITICAL,
}

#: Namespace of the row ids derived from the message an alert came in (see `Alert.rows`).
SOURCE_NAMESPACE = uuid.UUID("3618c635-a616-41cf-a524-a2aac7062353")

_EMAIL = re.compile(r"^[^@\s<>,;\"]+@[^@\s<>,;\"]+\.[^@\s<>,;\"]+$")
_CONTROL = re.compile(r"[\r\n\0]")


def humanise(alert_type: AlertType) -> str:
    """``ExpirationWarning`` → ``Expiration warning``: the default subject."""
    words = re.findall(r"[A-Z][a-z]*", alert_type.value)
    return " ".join([words[0]] + [w.lower() for w in words[1:]])


@dataclass(frozen=True)
class Alert:
    type: AlertType
    channels: tuple[Channel, ...]
    recipient: str
    subject: str
    message: str
    severity: Severity
    certificate_id: str | None
    dedupe_key: str | None

    def rows(self, now: datetime, *, source: str | None = None) -> list[dict]:
        """One new pending row per channel, each with the alert's dedupe key: the key is unique per
        channel, so a repeated request finds each row it created whatever list of channels it names.

        ``source`` names the message the alert came in (a Celery task id): the row ids are then
        derived from it, so handling that message again yields the same ids, not new rows.
        """
        return [
            {
                "id": _row_id(source, channel),
                "type": self.type.value,
                "certificate_id": self.certificate_id,
                "channel": channel.value,
                "recipient": self.recipient,
                "subject": self.subject,
                "message": self.message,
                "severity": self.severity.value,
                "status": Status.PENDING.value,
                "retry_count": 0,
                "dedupe_key": self.dedupe_key,
                "created_at": now,
                "updated_at": now,
                "dispatched_at": now,
            }
            for channel in self.channels
        ]


def _row_id(source: str | None, channel: Channel) -> str:
    if source is None:
        return f"notif_{uuid.uuid4().hex}"
    return f"notif_{uuid.uuid5(SOURCE_NAMESPACE, f'{source}:{channel.value}').hex}"


def _text(data: Mapping[str, Any], name: str, limit: int, *, required: bool = False) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise ValidationError(f"{name} is required", field=name)
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string", field=name)
    if required and not value.strip():
        raise ValidationError(f"{name} must not be empty", field=name)
    if len(value) > limit:
        raise ValidationError(f"{name} is longer than {limit} characters", field=name)
    if "\x00" in value:  # PostgreSQL text cannot store NUL; refuse it here rather than fail at INSERT
        raise ValidationError(f"{name} contains a NUL character", field=name)
    return value


def _enum(enum_cls, value: Any, name: str):
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise ValidationError(f"{name} {value!r} is not one of: {allowed}", field=name) from None


def parse_alert(data: Mapping[str, Any]) -> Alert:
    """Validate a producer's fields into an `Alert`.

    Raises:
        ValidationError: naming the first bad field (unknown field, type, channel, severity, empty
            message, over-long text, a recipient the channel cannot use).
    """
    if not isinstance(data, Mapping):
        raise ValidationError("the alert must be a JSON object")
    unknown = sorted(set(data) - FIELDS)
    if unknown:
        raise ValidationError(f"unknown field {unknown[0]!r}", field=unknown[0])
    alert_type = _enum(AlertType, _text(data, "type", 64, required=True), "type")
    if ("channel" in data) == ("channels" in data):
        raise ValidationError("give exactly one of channel or channels", field="channel")
    raw = [data["channel"]] if "channel" in data else data["channels"]
    if not isinstance(raw, list) or not raw or len(raw) > len(Channel):
        raise ValidationError("channels must be a non-empty list of channel names", field="channels")
    channels = tuple(dict.fromkeys(_enum(Channel, c, "channel") for c in raw))
    recipient = _text(data, "recipient", MAX_RECIPIENT_CHARS) or ""
    if _CONTROL.search(recipient):
        raise ValidationError("recipient contains a line break or NUL", field="recipient")
    if Channel.EMAIL in channels and not _EMAIL.match(recipient):
        raise ValidationError("recipient must be an e-mail address for the Email channel", field="recipient")
    subject = _text(data, "subject", MAX_SUBJECT_CHARS)
    if subject is not None and _CONTROL.search(subject):
        raise ValidationError("subject contains a line break or NUL", field="subject")
    severity = data.get("severity")
    return Alert(
        type=alert_type,
        channels=channels,
        recipient=recipient,
        subject=subject if subject and subject.strip() else humanise(alert_type),
        message=_text(data, "message", MAX_MESSAGE_CHARS, required=True),
        severity=DEFAULT_SEVERITY[alert_type] if severity is None else _enum(Severity, severity, "severity"),
        certificate_id=_text(data, "certificate_id", MAX_KEY_CHARS),
        dedupe_key=_text(data, "dedupe_key", MAX_KEY_CHARS),
    )
