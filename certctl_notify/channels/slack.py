"""Slack incoming webhook: one ``text`` message in mrkdwn, user text escaped."""

from __future__ import annotations

import json

from certctl_notify.channels.base import Notification, Sent
from certctl_notify.channels.http import OutboundHttp, classify
from certctl_notify.redact import safe_url, url_secrets
from certctl_notify.settings import Settings


def escape(text: str) -> str:
    """Slack's three control characters as entities, so alert text cannot ping ``<!channel>``,
    mention a user or inject a link; ``&`` goes first or the other entities would be escaped twice."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def payload(notification: Notification, *, channel: str | None = None, username: str | None = None) -> dict:
    """The webhook body: the subject in bold, then the message. ``channel`` and ``username`` are
    operator settings, sent unescaped (legacy webhooks honour them, app webhooks ignore them)."""
    body = {"text": f"*{escape(notification.subject)}*\n{escape(notification.message)}"}
    if channel:
        body["channel"] = channel
    if username:
        body["username"] = username
    return body


class SlackChannel:
    """POSTs to ``CERTCTL_SLACK_WEBHOOK_URL``. Slack answers 200 ``ok``; its errors are 400/403/404/410
    with a short text body (``invalid_payload``, ``no_service``…), permanent by `classify`."""

    name = "Slack"

    def __init__(
        self, url: str, http: OutboundHttp, *, channel: str | None = None, username: str | None = None,
    ):
        self._url = url
        self._http = http
        self._channel = channel
        self._username = username
        # The whole path is the credential (/services/T…/B…/<token>): keep every piece out of errors.
        self._secrets = url_secrets(url)

    @classmethod
    def from_settings(cls, settings: Settings, http: OutboundHttp) -> SlackChannel:
        slack = settings.slack
        return cls(slack.webhook_url, http, channel=slack.channel, username=slack.username)

    def send(self, notification: Notification) -> Sent:
        """Send one message.

        Raises:
            TransientError: 408/425/429/5xx, timeouts, connection and TLS errors.
            PermanentError: any other non-2xx answer, or a URL the SSRF guard refuses.
        """
        body = payload(notification, channel=self._channel, username=self._username)
        reply = self._http.post(
            self._url,
            content=json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(),
            headers={"user-agent": "certctl-notify", "content-type": "application/json"},
            secrets=self._secrets,
        )
        classify(reply, peer=safe_url(self._url), secrets=self._secrets)
        return Sent(status_code=reply.status_code)
