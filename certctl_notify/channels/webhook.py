"""Generic webhook: a JSON POST signed per the Standard Webhooks scheme."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime

from standardwebhooks import Webhook

from certctl_notify.channels.base import Notification, Sent
from certctl_notify.channels.http import PORTABLE_HEADERS, OutboundHttp, classify
from certctl_notify.redact import safe_url, url_secrets
from certctl_notify.settings import Settings


def payload(notification: Notification) -> dict:
    """The body receivers get: Standard Webhooks' ``{type, timestamp, data}`` envelope."""
    return {
        "type": f"certctl.{notification.type}",
        "timestamp": notification.created_at.isoformat(),
        "data": {
            "id": notification.id,
            "type": notification.type,
            "certificate_id": notification.certificate_id,
            "recipient": notification.recipient,
            "subject": notification.subject,
            "message": notification.message,
            "severity": notification.severity,
            "attempt": notification.attempt,
        },
    }


class WebhookChannel:
    """POSTs to ``CERTCTL_WEBHOOK_URL``; ``webhook-id`` is the notification id on every attempt, so a
    resend after a crash is recognisable downstream."""

    name = "Webhook"

    def __init__(
        self, url: str, secrets: tuple[str, ...], headers: tuple[tuple[str, str], ...], http: OutboundHttp,
        *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self._url = url
        self._signers = [Webhook(secret) for secret in secrets]
        self._secrets = secrets
        # Lower-cased so a configured "Content-Type" or "Webhook-Id" is replaced by the protocol
        # header set in `send` rather than sent beside it (two values break receivers' checks).
        self._headers = {name.lower(): value for name, value in headers}
        self._http = http
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, http: OutboundHttp) -> WebhookChannel:
        return cls(settings.webhook.url, settings.webhook.secrets, settings.webhook.headers, http)

    def send(self, notification: Notification) -> Sent:
        body = json.dumps(payload(notification), separators=(",", ":"), ensure_ascii=False)
        # In UTC: the library signs the wall-clock digits as if they were UTC, the header uses the epoch.
        timestamp = self._clock().astimezone(UTC).replace(microsecond=0)
        protocol = {
            "content-type": "application/json",
            "webhook-id": notification.id,
            "webhook-timestamp": str(int(timestamp.timestamp())),
        }
        if self._signers:
            protocol["webhook-signature"] = " ".join(
                signer.sign(notification.id, timestamp, body) for signer in self._signers
            )
        headers = {"user-agent": "certctl-notify", **self._headers, **protocol}
        # A redirect to another origin gets the signed request (the signature does not reveal the
        # secret), never a configured header: any of them may be a credential, a User-Agent too.
        portable = {*protocol, *(name for name in PORTABLE_HEADERS if name not in self._headers)}
        secrets = (*url_secrets(self._url), *self._secrets, *self._headers.values())
        reply = self._http.post(
            self._url, content=body.encode(), headers=headers, secrets=secrets, portable_headers=portable
        )
        classify(reply, peer=safe_url(self._url), secrets=secrets)
        return Sent(status_code=reply.status_code)
