"""The Slack channel against a real receiver on 127.0.0.1: the exact request, escaping, outcomes."""

from __future__ import annotations

import pytest

from certctl_notify.channels.base import Sent
from certctl_notify.channels.http import OutboundHttp
from certctl_notify.channels.slack import SlackChannel, escape
from certctl_notify.errors import PermanentError, TransientError
from certctl_notify.settings import OutboundSettings, Settings, SlackSettings
from tests.support.receiver import Answer
from tests.support.vendor_receiver import VendorReceiver, headers_of, notification

LOOPBACK = OutboundSettings(allow=("127.0.0.1/32",), timeout_seconds=2)
TOKEN = "XXXXSECRETXXXX"
HOOK = f"/services/T000/B000/{TOKEN}"


@pytest.fixture
def peer():
    with VendorReceiver() as receiver:
        yield receiver


@pytest.fixture
def make_channel(peer):
    """``make_channel(channel=…, username=…)`` built through `from_settings`, HTTP client closed after."""
    http = OutboundHttp(LOOPBACK)

    def make(**slack) -> SlackChannel:
        slack = SlackSettings(webhook_url=peer.url_for(HOOK), **slack)
        return SlackChannel.from_settings(Settings("sqlite://", "memory://", slack=slack), http)

    yield make
    http.close()


def test_one_post_carries_bold_subject_body_channel_and_username(peer, make_channel):
    # Given a Slack channel with a channel and username override
    channel = make_channel(channel="#pki-alerts", username="certctl")
    alert = notification("Slack")
    # When it sends one alert
    sent = channel.send(alert)
    # Then Slack got exactly one JSON POST on the webhook path, with the subject in bold over the body
    assert sent == Sent(status_code=200)
    (got,) = peer.requests
    assert (got.method, got.path) == ("POST", HOOK)
    assert headers_of(got)["content-type"] == "application/json"
    assert got.json == {
        "text": "*Certificate expires in 7 days*\napi.example.com expires on 2030-01-08",
        "channel": "#pki-alerts",
        "username": "certctl",
    }


def test_channel_and_username_are_left_out_when_not_set(peer, make_channel):
    # Given a Slack channel with neither override
    make_channel().send(notification("Slack"))
    # Then the body holds only the text (the webhook's own channel and name apply)
    (got,) = peer.requests
    assert set(got.json) == {"text"}


def test_user_text_cannot_ping_the_channel_or_inject_a_link(peer, make_channel):
    # Given an alert whose subject and message carry Slack control sequences and a literal entity
    alert = notification(
        "Slack", subject="Expired <!channel> & <!here>",
        message="renew at <https://evil.example|the portal> or ask <@U024BE7LH>; R&D says &lt;ok&gt;",
    )
    # When it is sent
    make_channel().send(alert)
    # Then every &, < and > arrives escaped, so Slack shows them as text and parses nothing
    (got,) = peer.requests
    assert got.json["text"] == (
        "*Expired &lt;!channel&gt; &amp; &lt;!here&gt;*\n"
        "renew at &lt;https://evil.example|the portal&gt; or ask &lt;@U024BE7LH&gt;; "
        "R&amp;D says &amp;lt;ok&amp;gt;"
    )
    assert "<!" not in got.json["text"] and "<@" not in got.json["text"] and "<http" not in got.json["text"]


def test_escape_handles_the_ampersand_first():
    # Given text that holds all three control characters
    # Then each becomes its entity exactly once
    assert escape("a & b < c > d") == "a &amp; b &lt; c &gt; d"
    assert escape("&amp;") == "&amp;amp;"


@pytest.mark.parametrize("status", [200, 202, 204])
def test_any_2xx_is_sent(peer, make_channel, status):
    # Given Slack answering with a 2xx
    peer.script(HOOK, [Answer(status, body=b"ok" if status != 204 else b"")])
    # Then the alert is sent, with the status recorded
    assert make_channel().send(notification("Slack")) == Sent(status_code=status)


@pytest.mark.parametrize(("status", "body"), [
    (400, b"invalid_payload"), (401, b"invalid_token"), (403, b"action_prohibited"),
    (404, b"no_service"), (410, b"channel_is_archived"),
])
def test_slack_errors_are_permanent_and_named(peer, make_channel, status, body):
    # Given Slack refusing the post with one of its documented errors
    peer.script(HOOK, [Answer(status, body=body)])
    # When the alert is sent, Then the attempt fails permanently, naming status and Slack's reason
    with pytest.raises(PermanentError) as caught:
        make_channel().send(notification("Slack"))
    assert caught.value.status_code == status
    assert f"HTTP {status}" in str(caught.value) and body.decode() in str(caught.value)


def test_429_is_transient_and_passes_retry_after_up(peer, make_channel):
    # Given Slack rate limiting with Retry-After: 2
    peer.script(HOOK, [Answer(429, headers={"Retry-After": "2"}, body=b"rate_limited")])
    # Then the attempt is transient and asks for two seconds
    with pytest.raises(TransientError) as caught:
        make_channel().send(notification("Slack"))
    assert (caught.value.status_code, caught.value.retry_after) == (429, 2.0)


def test_503_is_transient(peer, make_channel):
    # Given Slack unavailable
    peer.script(HOOK, [Answer(503, body=b"rollup_error")])
    # Then the attempt is transient, with no requested delay
    with pytest.raises(TransientError) as caught:
        make_channel().send(notification("Slack"))
    assert (caught.value.status_code, caught.value.retry_after) == (503, None)


def test_the_webhook_token_never_appears_in_the_error(peer, make_channel):
    # Given Slack echoing the whole webhook URL and the bare token back in its error body
    echo = f"no_service: {peer.url_for(HOOK)} (token {TOKEN}, path {HOOK})".encode()
    peer.script(HOOK, [Answer(404, body=echo)])
    # When the alert fails
    with pytest.raises(PermanentError) as caught:
        make_channel().send(notification("Slack"))
    # Then the error still says what happened, and nothing of the token's path survives
    text = str(caught.value)
    assert "HTTP 404" in text and "no_service" in text
    assert TOKEN not in text and "T000" not in text and "B000" not in text
