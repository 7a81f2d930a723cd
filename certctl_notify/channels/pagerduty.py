"""PagerDuty Events API v2: one ``trigger`` event per notification, deduplicated by its id."""

from __future__ import annotations

import json
from datetime import UTC

from certctl_notify.channels.base import Notification, Sent
from certctl_notify.channels.http import OutboundHttp, classify
from certctl_notify.redact import safe_url
from certctl_notify.settings import Settings

#: Characters of ``payload.summary`` PagerDuty accepts at most.
MAX_SUMMARY_CHARS = 1024


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, ending in "…" when cut. Counted in UTF-16 units, as
    Java and JavaScript count them, which never exceeds the limit in code points either."""
    units = text.encode("utf-16-le")
    if len(units) <= 2 * limit:
        return text
    return units[: 2 * (limit - 1)].decode("utf-16-le", "ignore") + "…"  # "ignore" drops a split pair


def event(notification: Notification, *, routing_key: str, source: str, severity: dict[str, str]) -> dict:
    """The enqueue body. The summary is one line (it becomes the incident title, SMS and push text);
    the full message travels in ``custom_details``. Nothing varies by attempt, so a resend is the
    same event and PagerDuty folds it into the open alert by ``dedup_key``."""
    summary = " ".join(f"{notification.subject}: {notification.message}".split())
    payload = {
        "summary": clip(summary, MAX_SUMMARY_CHARS),
        "source": source,
        "severity": severity.get(notification.severity) or severity["warning"],
        "timestamp": notification.created_at.astimezone(UTC).isoformat(),
        "class": notification.type,
        "custom_details": {
            "notification_id": notification.id,
            "type": notification.type,
            "certificate_id": notification.certificate_id,
            "subject": notification.subject,
            "message": notification.message,
            "severity": notification.severity,
        },
    }
    if notification.certificate_id:
        payload["component"] = notification.certificate_id
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": notification.id,
        "payload": payload,
        "client": "certctl-notify",
    }


class PagerDutyChannel:
    """POSTs to ``CERTCTL_PAGERDUTY_URL``. PagerDuty answers 202; 400 (invalid event) is permanent,
    429 and 5xx are transient, as its retry table says."""

    name = "PagerDuty"

    def __init__(self, routing_key: str, http: OutboundHttp, *, url: str, source: str,
                 severity: tuple[tuple[str, str], ...]):
        self._routing_key = routing_key
        self._http = http
        self._url = url
        self._source = source
        self._severity = dict(severity)

    @classmethod
    def from_settings(cls, settings: Settings, http: OutboundHttp) -> PagerDutyChannel:
        pd = settings.pagerduty
        return cls(pd.routing_key, http, url=pd.url, source=pd.source, severity=pd.severity)

    def send(self, notification: Notification) -> Sent:
        """Trigger one event.

        Raises:
            TransientError: 408/425/429/5xx, timeouts, connection and TLS errors.
            PermanentError: any other non-2xx answer, or a URL the SSRF guard refuses.
        """
        body = event(
            notification, routing_key=self._routing_key, source=self._source, severity=self._severity,
        )
        secrets = (self._routing_key,)  # the key is in the body; an "invalid event" reply may quote it
        reply = self._http.post(
            self._url,
            content=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
            headers={"user-agent": "certctl-notify", "content-type": "application/json"},
            secrets=secrets,
        )
        classify(reply, peer=safe_url(self._url), secrets=secrets)
        return Sent(status_code=reply.status_code)
