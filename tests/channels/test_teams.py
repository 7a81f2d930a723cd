"""The Teams channel against a real receiver on 127.0.0.1: both card formats, 200/202, outcomes."""

from __future__ import annotations

import pytest

from certctl_notify.channels.base import Sent
from certctl_notify.channels.http import OutboundHttp
from certctl_notify.channels.teams import MAX_MESSAGE_CHARS, TeamsChannel
from certctl_notify.errors import PermanentError, TransientError
from certctl_notify.settings import OutboundSettings, Settings, TeamsSettings
from tests.support.receiver import Answer
from tests.support.vendor_receiver import VendorReceiver, headers_of, notification

LOOPBACK = OutboundSettings(allow=("127.0.0.1/32",), timeout_seconds=2)
SIG = "S1GSECRETVALUE"
#: A Workflows URL: the credential is the ``sig`` query value.
FLOW = f"/workflows/4c1f/triggers/manual/paths/invoke?api-version=1&sig={SIG}"


@pytest.fixture
def peer():
    with VendorReceiver() as receiver:
        yield receiver


@pytest.fixture
def make_channel(peer):
    """``make_channel(card="adaptive")`` built through `from_settings`; HTTP client closed after."""
    http = OutboundHttp(LOOPBACK)

    def make(card: str = "adaptive") -> TeamsChannel:
        teams = TeamsSettings(webhook_url=peer.url_for(FLOW), format=card)
        return TeamsChannel.from_settings(Settings("sqlite://", "memory://", teams=teams), http)

    yield make
    http.close()


def test_default_is_one_post_of_an_adaptive_card(peer, make_channel):
    # Given a Teams channel in its default format
    peer.script(FLOW, [202])
    alert = notification("Teams", severity="error", type="RenewalFailure")
    # When it sends one alert
    sent = make_channel().send(alert)
    # Then the Workflows URL got one JSON POST holding an Adaptive Card of TextBlocks, and 202 is sent
    assert sent == Sent(status_code=202)
    (got,) = peer.requests
    assert (got.method, got.path) == ("POST", FLOW)
    assert headers_of(got)["content-type"] == "application/json"
    assert got.json == {
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.4",
                "body": [
                    {"type": "TextBlock", "text": "Certificate expires in 7 days", "weight": "Bolder",
                     "size": "Medium", "wrap": True},
                    {"type": "TextBlock", "text": "api.example.com expires on 2030-01-08", "wrap": True},
                    {"type": "TextBlock", "text": "error · RenewalFailure · mc-api-prod", "isSubtle": True,
                     "spacing": "Small", "wrap": True},
                ],
            },
        }],
    }


@pytest.mark.parametrize(("severity", "color"), [
    ("critical", "A4262C"), ("error", "D83B01"), ("warning", "FFB900"), ("info", "0078D7"),
])
def test_messagecard_format_sends_the_legacy_card(peer, make_channel, severity, color):
    # Given a Teams channel configured for the legacy MessageCard
    alert = notification("Teams", severity=severity)
    # When it sends
    assert make_channel("messagecard").send(alert) == Sent(status_code=200)
    # Then the body is a MessageCard, its colour following the severity
    (got,) = peer.requests
    assert got.json == {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": "Certificate expires in 7 days",
        "title": "Certificate expires in 7 days",
        "text": "api.example.com expires on 2030-01-08",
        "themeColor": color,
    }


@pytest.mark.parametrize("card", ["adaptive", "messagecard"])
def test_a_long_message_is_cut_to_stay_under_the_teams_size_limit(peer, make_channel, card):
    # Given a message far longer than a Teams post may be
    alert = notification("Teams", message="x" * 50_000)
    # When it is sent
    make_channel(card).send(alert)
    # Then the card carries the first characters, marked as cut, and the post stays small
    (got,) = peer.requests
    card_json = got.json if card == "messagecard" else got.json["attachments"][0]["content"]
    text = card_json["text"] if card == "messagecard" else card_json["body"][1]["text"]
    assert len(text) == MAX_MESSAGE_CHARS and text.endswith("…") and text.startswith("x" * 100)
    assert len(got.body) < 14_000


@pytest.mark.parametrize("status", [200, 202])
def test_200_and_202_are_both_sent(peer, make_channel, status):
    # Given an incoming webhook (200 "1") or a Workflow (202, empty body)
    peer.script(FLOW, [Answer(status, body=b"1" if status == 200 else b"")])
    # Then either answer is a delivered alert
    assert make_channel().send(notification("Teams")) == Sent(status_code=status)


@pytest.mark.parametrize(("wrapped", "error"), [(429, TransientError), (502, TransientError),
                                                 (400, PermanentError), (413, PermanentError)])
def test_a_failure_hidden_in_a_legacy_200_is_classified_by_its_real_status(
    peer, make_channel, wrapped, error
):
    # Given a legacy connector that answers 200 but reports the real failure in the body
    body = (f"Webhook message delivery failed with error: Microsoft Teams endpoint returned HTTP error "
            f"{wrapped} with ContextId tcid=0,server=msgapi-production,cv=abc.0..").encode()
    peer.script(FLOW, [Answer(200, body=body)])
    # When the alert is sent, Then it is not counted as sent: the hidden status decides retry or dead
    with pytest.raises(error) as caught:
        make_channel("messagecard").send(notification("Teams"))
    assert caught.value.status_code == wrapped
    assert "inside a 200 reply" in str(caught.value)


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_other_4xx_are_permanent(peer, make_channel, status):
    # Given Teams refusing the post
    peer.script(FLOW, [Answer(status, body=b'{"error":{"code":"TriggerRequestFailed"}}')])
    # Then the attempt fails permanently, naming the status and reason
    with pytest.raises(PermanentError) as caught:
        make_channel().send(notification("Teams"))
    assert caught.value.status_code == status
    assert f"HTTP {status}" in str(caught.value) and "TriggerRequestFailed" in str(caught.value)


def test_429_is_transient_and_passes_retry_after_up(peer, make_channel):
    # Given Teams throttling with Retry-After: 2
    peer.script(FLOW, [Answer(429, headers={"Retry-After": "2"}, body=b"")])
    # Then the attempt is transient and asks for two seconds
    with pytest.raises(TransientError) as caught:
        make_channel().send(notification("Teams"))
    assert (caught.value.status_code, caught.value.retry_after) == (429, 2.0)


def test_503_is_transient(peer, make_channel):
    peer.script(FLOW, [503])
    with pytest.raises(TransientError) as caught:
        make_channel().send(notification("Teams"))
    assert (caught.value.status_code, caught.value.retry_after) == (503, None)


def test_the_workflow_signature_never_appears_in_the_error(peer, make_channel):
    # Given a Workflow echoing its own URL and signature in an error body
    peer.script(FLOW, [Answer(401, body=f"bad signature {SIG} for {peer.url_for(FLOW)}".encode())])
    # When the alert fails
    with pytest.raises(PermanentError) as caught:
        make_channel().send(notification("Teams"))
    # Then the signature is gone from the error, which still names the status
    assert "HTTP 401" in str(caught.value) and SIG not in str(caught.value)


def test_an_unknown_card_format_is_refused_at_construction():
    # Given a format outside adaptive | messagecard (config.py refuses it first; this is the backstop)
    with pytest.raises(ValueError, match="card format 'html'"):
        TeamsChannel("https://example.invalid/x", http=None, card="html")
