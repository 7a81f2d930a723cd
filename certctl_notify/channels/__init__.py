"""Channel adapters, built from settings: which channels exist is decided here, not in the task."""

from __future__ import annotations

from collections.abc import Callable

from certctl_notify.channels.base import Channel, Notification, Sent, UnconfiguredChannel
from certctl_notify.channels.http import OutboundHttp
from certctl_notify.model import Channel as ChannelName
from certctl_notify.settings import Settings

#: The variable whose absence leaves each channel unconfigured (named in the dead row's reason).
REQUIRED_VARIABLE = {
    ChannelName.EMAIL: "CERTCTL_SMTP_HOST",
    ChannelName.WEBHOOK: "CERTCTL_WEBHOOK_URL",
    ChannelName.SLACK: "CERTCTL_SLACK_WEBHOOK_URL",
    ChannelName.TEAMS: "CERTCTL_TEAMS_WEBHOOK_URL",
    ChannelName.PAGERDUTY: "CERTCTL_PAGERDUTY_ROUTING_KEY",
    ChannelName.OPSGENIE: "CERTCTL_OPSGENIE_API_KEY",
}


def _factories() -> list[tuple[ChannelName, Callable[[Settings], bool], Callable[[Settings, OutboundHttp], Channel]]]:
    """(channel, is it configured?, build it) for every implemented channel: one line each."""
    from certctl_notify.channels.email import EmailChannel
    from certctl_notify.channels.opsgenie import OpsGenieChannel
    from certctl_notify.channels.pagerduty import PagerDutyChannel
    from certctl_notify.channels.slack import SlackChannel
    from certctl_notify.channels.teams import TeamsChannel
    from certctl_notify.channels.webhook import WebhookChannel

    return [
        (ChannelName.EMAIL, lambda s: bool(s.smtp.host), EmailChannel.from_settings),
        (ChannelName.WEBHOOK, lambda s: bool(s.webhook.url), WebhookChannel.from_settings),
        (ChannelName.SLACK, lambda s: bool(s.slack.webhook_url), SlackChannel.from_settings),
        (ChannelName.TEAMS, lambda s: bool(s.teams.webhook_url), TeamsChannel.from_settings),
        (ChannelName.PAGERDUTY, lambda s: bool(s.pagerduty.routing_key), PagerDutyChannel.from_settings),
        (ChannelName.OPSGENIE, lambda s: bool(s.opsgenie.api_key), OpsGenieChannel.from_settings),
    ]


def build_channels(settings: Settings, *, http: OutboundHttp | None = None) -> dict[str, Channel]:
    """One adapter per channel name; a channel without its settings is an `UnconfiguredChannel`."""
    http = http or OutboundHttp(settings.outbound)
    channels: dict[str, Channel] = {
        name.value: UnconfiguredChannel(name.value, variable) for name, variable in REQUIRED_VARIABLE.items()
    }
    for name, configured, build in _factories():
        if configured(settings):
            channels[name.value] = build(settings, http)
    return channels


__all__ = ["Channel", "Notification", "Sent", "UnconfiguredChannel", "build_channels"]
