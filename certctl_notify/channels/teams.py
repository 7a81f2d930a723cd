"""Microsoft Teams: an Adaptive Card (incoming webhook or Workflows URL) or a legacy MessageCard."""

from __future__ import annotations

import json
import re

from certctl_notify.channels.base import Notification, Sent
from certctl_notify.channels.http import OutboundHttp, Reply, classify
from certctl_notify.redact import safe_url, url_secrets
from certctl_notify.settings import Settings

#: Characters of the message sent at most. Teams refuses posts over about 28 KB, and may count
#: UTF-16 (two bytes a character): 6000 characters keep any card well under the limit.
MAX_MESSAGE_CHARS = 6000
#: MessageCard ``themeColor`` per alert severity (hex RGB, no "#").
THEME_COLOR = {"critical": "A4262C", "error": "D83B01", "warning": "FFB900", "info": "0078D7"}
# Legacy connectors answer 200 even when the post failed, naming the real status in the body.
_WRAPPED_FAILURE = re.compile(r"^\s*Webhook message delivery failed.*?HTTP error (\d{3})", re.DOTALL)


def _message(notification: Notification) -> str:
    text = notification.message
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 1] + "…"


def adaptive_card(notification: Notification) -> dict:
    """A ``message`` activity holding one Adaptive Card 1.4 of TextBlocks."""
    facts = (notification.severity, notification.type, notification.certificate_id)
    context = " · ".join(fact for fact in facts if fact)
    return {
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": notification.subject, "weight": "Bolder", "size": "Medium",
                     "wrap": True},
                    {"type": "TextBlock", "text": _message(notification), "wrap": True},
                    {"type": "TextBlock", "text": context, "isSubtle": True, "spacing": "Small",
                     "wrap": True},
                ],
            },
        }],
    }


def message_card(notification: Notification) -> dict:
    """The legacy connector card (``CERTCTL_TEAMS_FORMAT=messagecard``); Workflows do not accept it."""
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": notification.subject,
        "title": notification.subject,
        "text": _message(notification),
        "themeColor": THEME_COLOR.get(notification.severity, THEME_COLOR["warning"]),
    }


class TeamsChannel:
    """POSTs to ``CERTCTL_TEAMS_WEBHOOK_URL``. Incoming webhooks answer 200 and Workflows 202: both
    are sent (any 2xx is)."""

    name = "Teams"

    def __init__(self, url: str, http: OutboundHttp, *, card: str = "adaptive"):
        if card not in ("adaptive", "messagecard"):
            raise ValueError(f"unknown Teams card format {card!r} (adaptive or messagecard)")
        self._url = url
        self._http = http
        self._build = adaptive_card if card == "adaptive" else message_card
        # Workflows URLs carry the credential in the query (sig=…), connector URLs in the path.
        self._secrets = url_secrets(url)

    @classmethod
    def from_settings(cls, settings: Settings, http: OutboundHttp) -> TeamsChannel:
        return cls(settings.teams.webhook_url, http, card=settings.teams.format)

    def send(self, notification: Notification) -> Sent:
        """Send one card.

        Raises:
            TransientError: 408/425/429/5xx (also when wrapped in a legacy 200), timeouts, connection errors.
            PermanentError: any other non-2xx answer (or wrapped one), or a URL the SSRF guard refuses.
        """
        body = json.dumps(self._build(notification), separators=(",", ":"), ensure_ascii=False)
        reply = self._http.post(
            self._url,
            content=body.encode(),
            headers={"user-agent": "certctl-notify", "content-type": "application/json"},
            secrets=self._secrets,
        )
        peer = safe_url(self._url)
        classify(reply, peer=peer, secrets=self._secrets)
        wrapped = _WRAPPED_FAILURE.match(reply.body[:2048].decode("utf-8", "replace"))
        if wrapped:  # classify the status the connector hid, so a throttled post is retried, not lost
            classify(Reply(int(wrapped.group(1)), reply.headers, reply.body),
                     peer=f"{peer} (inside a 200 reply)", secrets=self._secrets)
        return Sent(status_code=reply.status_code)
