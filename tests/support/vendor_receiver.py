"""A real HTTP peer on 127.0.0.1 standing in for Slack, Teams, PagerDuty and OpsGenie.

Vendor payloads have no common field to key scripts by, so answers are scripted per request path
(each test gives each vendor its own path). Every request is recorded with its method, path, headers
and raw body for exact, field-by-field checks.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from certctl_notify.channels.base import Notification
from tests.support.receiver import Answer, Received, Receiver


class VendorReceiver(Receiver):
    """``script(path, [429, 202])`` answers requests to ``path`` in that order (the last answer
    repeats); other paths get ``default``. Use as a context manager, or ``start()``/``stop()``."""

    def __init__(self, default: Answer | int = 200):
        super().__init__()
        self.default = default if isinstance(default, Answer) else Answer(status=default)
        self.base = self.url.rsplit("/", 1)[0]  # http://127.0.0.1:<port>

    def url_for(self, path: str) -> str:
        return f"{self.base}{path}"

    def _next(self, got: Received) -> Answer:
        with self._lock:
            self.requests.append(got)
            script = self._scripts.get(got.path)
            if not script:
                return self.default
            return script.pop(0) if len(script) > 1 else script[0]

    def at(self, path: str) -> list[Received]:
        """The requests received on ``path``, oldest first."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def __enter__(self) -> VendorReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def headers_of(got: Received) -> dict:
    """A received request's headers by lower-case name (HTTP names are case-insensitive)."""
    return {name.lower(): value for name, value in got.headers.items()}


def notification(channel: str, **overrides) -> Notification:
    """A notification as the worker would hand it to ``channel``; fields overridable."""
    fields = dict(
        id=f"notif_{uuid.uuid4().hex}", type="ExpirationWarning", channel=channel, recipient="",
        subject="Certificate expires in 7 days", message="api.example.com expires on 2030-01-08",
        severity="warning", certificate_id="mc-api-prod", created_at=datetime(2030, 1, 1, 12, 0, tzinfo=UTC),
        attempt=1,
    )
    return Notification(**{**fields, **overrides})
