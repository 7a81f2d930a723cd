"""Every channel held to one contract: the `Channel` Protocol, its name, and settings deciding whether it
exists (built when configured, an `UnconfiguredChannel` naming its variable when not)."""

from __future__ import annotations

import re

import pytest

from certctl_notify.channels import REQUIRED_VARIABLE, Channel, UnconfiguredChannel, build_channels
from certctl_notify.channels.email import EmailChannel
from certctl_notify.channels.http import OutboundHttp
from certctl_notify.channels.opsgenie import OpsGenieChannel
from certctl_notify.channels.pagerduty import PagerDutyChannel
from certctl_notify.channels.slack import SlackChannel
from certctl_notify.channels.teams import TeamsChannel
from certctl_notify.channels.webhook import WebhookChannel
from certctl_notify.environment import load_settings
from certctl_notify.errors import PermanentError
from certctl_notify.model import Channel as ChannelName
from certctl_notify.settings import OutboundSettings
from tests.support.vendor_receiver import notification

#: Each channel, its adapter class and the least environment that configures it. A new channel is
#: one line here.
CHANNELS = {
    ChannelName.EMAIL: (EmailChannel, {"CERTCTL_SMTP_HOST": "smtp.example.com"}),
    ChannelName.WEBHOOK: (WebhookChannel, {"CERTCTL_WEBHOOK_URL": "https://hooks.example.com/certctl"}),
    ChannelName.SLACK: (SlackChannel, {"CERTCTL_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x"}),
    ChannelName.TEAMS: (TeamsChannel, {"CERTCTL_TEAMS_WEBHOOK_URL": "https://example.webhook.office.com/x"}),
    ChannelName.PAGERDUTY: (PagerDutyChannel, {"CERTCTL_PAGERDUTY_ROUTING_KEY": "r" * 32}),
    ChannelName.OPSGENIE: (OpsGenieChannel, {"CERTCTL_OPSGENIE_API_KEY": "genie-key"}),
}


@pytest.fixture
def http():
    client = OutboundHttp(OutboundSettings())
    yield client
    client.close()


@pytest.mark.parametrize(("name", "adapter", "env"), [
    pytest.param(name, adapter, env, id=name.value) for name, (adapter, env) in CHANNELS.items()
])
def test_channel_keeps_the_contract(http, name, adapter, env):
    # Given settings configuring only this channel, and settings configuring none
    built = build_channels(load_settings(env), http=http)
    bare = build_channels(load_settings({}), http=http)
    # Then the configured channel is its adapter, satisfies the Protocol and carries the channel's name
    channel = built[name.value]
    assert type(channel) is adapter and isinstance(channel, Channel)
    assert channel.name == adapter.name == name.value
    # And its variable alone decided that: every other channel stayed unconfigured
    assert [n for n, c in built.items() if not isinstance(c, UnconfiguredChannel)] == [name.value]
    # And without it the channel is an UnconfiguredChannel that refuses every send, naming the variable
    missing = bare[name.value]
    assert isinstance(missing, UnconfiguredChannel) and isinstance(missing, Channel)
    assert missing.name == name.value
    expected = f"channel {name.value} is not configured (set {REQUIRED_VARIABLE[name]})"
    with pytest.raises(PermanentError, match=re.escape(expected)):
        missing.send(notification(name.value, recipient="ops@example.com"))


def test_every_channel_name_is_in_the_contract_table():
    # Given the channel names the model allows, Then each is held to the contract above
    assert set(CHANNELS) == set(ChannelName), "add the missing channel to CHANNELS in this file"
