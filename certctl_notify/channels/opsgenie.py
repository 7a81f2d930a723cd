"""OpsGenie Alert API v2: create one alert per notification, deduplicated by its id (``alias``)."""

from __future__ import annotations

import json

from certctl_notify.channels.base import Notification, Sent
from certctl_notify.channels.http import OutboundHttp, classify
from certctl_notify.channels.pagerduty import clip
from certctl_notify.redact import safe_url
from certctl_notify.settings import Settings

#: OpsGenie's field limits, in characters.
MAX_MESSAGE_CHARS = 130
MAX_DESCRIPTION_CHARS = 15000
MAX_ENTITY_CHARS = 512
#: The alert's ``source`` field.
SOURCE = "certctl-notify"


def alert(notification: Notification, *, priority: dict[str, str]) -> dict:
    """The create-alert body. Like PagerDuty's, it does not vary by attempt."""
    details = {
        "notification_id": notification.id, "type": notification.type, "severity": notification.severity,
    }
    body = {
        "message": clip(notification.subject, MAX_MESSAGE_CHARS),
        "alias": notification.id,
        "description": clip(notification.message, MAX_DESCRIPTION_CHARS),
        "priority": priority.get(notification.severity) or priority["warning"],
        "tags": ["certctl", notification.type, notification.severity],  # at most 20, 50 characters each
        "details": details,  # string values only
        "source": SOURCE,
    }
    if notification.certificate_id:
        details["certificate_id"] = notification.certificate_id
        body["entity"] = clip(notification.certificate_id, MAX_ENTITY_CHARS)
    return body


class OpsGenieChannel:
    """POSTs to ``CERTCTL_OPSGENIE_URL`` with ``Authorization: GenieKey …``. OpsGenie answers 202
    with a ``requestId`` and creates the alert asynchronously."""

    name = "OpsGenie"

    def __init__(self, api_key: str, http: OutboundHttp, *, url: str, priority: tuple[tuple[str, str], ...]):
        self._api_key = api_key
        self._http = http
        self._url = url
        self._priority = dict(priority)

    @classmethod
    def from_settings(cls, settings: Settings, http: OutboundHttp) -> OpsGenieChannel:
        og = settings.opsgenie
        return cls(og.api_key, http, url=og.url, priority=og.priority)

    def send(self, notification: Notification) -> Sent:
        """Create one alert; ``Sent.detail`` holds OpsGenie's ``requestId`` when it gave one.

        Raises:
            TransientError: 408/425/429/5xx, timeouts, connection and TLS errors.
            PermanentError: any other non-2xx answer (401 bad key, 403, 422…), or a refused URL.
        """
        body = alert(notification, priority=self._priority)
        reply = self._http.post(
            self._url,
            content=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
            headers={"user-agent": "certctl-notify", "content-type": "application/json",
                     "authorization": f"GenieKey {self._api_key}"},
            secrets=(self._api_key,),
        )
        classify(reply, peer=safe_url(self._url), secrets=(self._api_key,))
        return Sent(status_code=reply.status_code, detail=_request_id(reply.body))


def _request_id(body: bytes) -> str:
    try:
        request_id = json.loads(body).get("requestId")
    except (ValueError, AttributeError):  # not JSON, or JSON that is not an object
        return ""
    return f"requestId {request_id}" if isinstance(request_id, str) else ""
