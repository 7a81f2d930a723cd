"""The PagerDuty channel against a real receiver on 127.0.0.1: the exact event, limits, outcomes."""

from __future__ import annotations

import pytest

from certctl_notify.channels.base import Sent
from certctl_notify.channels.http import OutboundHttp
from certctl_notify.channels.pagerduty import MAX_SUMMARY_CHARS, PagerDutyChannel, clip
from certctl_notify.environment import load_settings
from certctl_notify.errors import PermanentError, TransientError
from certctl_notify.settings import OutboundSettings
from tests.support.receiver import Answer
from tests.support.vendor_receiver import VendorReceiver, headers_of, notification

LOOPBACK = OutboundSettings(allow=("127.0.0.1/32",), timeout_seconds=2)
ROUTING_KEY = "R0UT1NGK3YSECRET0000000000000000"
ENQUEUE = "/v2/enqueue"
ACCEPTED = Answer(202, body=b'{"status":"success","message":"Event processed","dedup_key":"x"}')


@pytest.fixture
def peer():
    with VendorReceiver(default=ACCEPTED) as receiver:
        yield receiver


@pytest.fixture
def make_channel(peer):
    """``make_channel(CERTCTL_PAGERDUTY_SEVERITY=…)``: built from the environment as the worker builds
    it, aimed at the receiver; the HTTP client is closed afterwards."""
    http = OutboundHttp(LOOPBACK)

    def make(**env) -> PagerDutyChannel:
        settings = load_settings({"CERTCTL_PAGERDUTY_ROUTING_KEY": ROUTING_KEY,
                                  "CERTCTL_PAGERDUTY_URL": peer.url_for(ENQUEUE), **env})
        return PagerDutyChannel.from_settings(settings, http)

    yield make
    http.close()


def test_one_trigger_event_with_the_notification_id_as_dedup_key(peer, make_channel):
    # Given a PagerDuty channel with its default source and severities
    alert = notification("PagerDuty")
    # When it sends one alert
    sent = make_channel().send(alert)
    # Then PagerDuty got one JSON POST with exactly the Events API v2 trigger, and 202 is sent
    assert sent == Sent(status_code=202)
    (got,) = peer.requests
    assert (got.method, got.path) == ("POST", ENQUEUE)
    assert headers_of(got)["content-type"] == "application/json"
    assert "authorization" not in headers_of(got)  # the routing key travels in the body only
    assert got.json == {
        "routing_key": ROUTING_KEY,
        "event_action": "trigger",
        "dedup_key": alert.id,
        "payload": {
            "summary": "Certificate expires in 7 days: api.example.com expires on 2030-01-08",
            "source": "certctl-notify",
            "severity": "warning",
            "timestamp": "2030-01-01T12:00:00+00:00",
            "class": "ExpirationWarning",
            "component": "mc-api-prod",
            "custom_details": {
                "notification_id": alert.id,
                "type": "ExpirationWarning",
                "certificate_id": "mc-api-prod",
                "subject": "Certificate expires in 7 days",
                "message": "api.example.com expires on 2030-01-08",
                "severity": "warning",
            },
        },
        "client": "certctl-notify",
    }
    assert "group" not in got.json["payload"]  # we have no grouping of sources to offer


def test_without_a_certificate_there_is_no_component_and_source_is_configurable(peer, make_channel):
    # Given an alert about no particular certificate, and a configured source
    channel = make_channel(CERTCTL_PAGERDUTY_SOURCE="pki.example.com")
    channel.send(notification("PagerDuty", certificate_id=None))
    # Then the event names the configured source and leaves component out
    (got,) = peer.requests
    assert got.json["payload"]["source"] == "pki.example.com"
    assert "component" not in got.json["payload"]
    assert got.json["payload"]["custom_details"]["certificate_id"] is None


@pytest.mark.parametrize(("severity", "default", "overridden"), [
    ("critical", "critical", "critical"), ("error", "error", "critical"),
    ("warning", "warning", "error"), ("info", "info", "warning"),
])
def test_severity_follows_the_alert_and_the_configured_mapping(
    peer, make_channel, severity, default, overridden
):
    # Given one channel with the default mapping and one with CERTCTL_PAGERDUTY_SEVERITY overrides
    plain = make_channel()
    tuned = make_channel(CERTCTL_PAGERDUTY_SEVERITY="error=critical,warning=error,info=warning")
    # When each sends an alert of this severity
    plain.send(notification("PagerDuty", severity=severity))
    tuned.send(notification("PagerDuty", severity=severity))
    # Then each event carries the mapped PagerDuty severity
    assert [r.json["payload"]["severity"] for r in peer.requests] == [default, overridden]


def test_summary_is_one_line_capped_at_1024_and_the_full_text_rides_in_custom_details(peer, make_channel):
    # Given a long subject and a long, multi-line message
    subject, message = "S" * 300, "line one\n\nline two\t" + "m" * 5000
    make_channel().send(notification("PagerDuty", subject=subject, message=message))
    # Then the summary is one line of exactly 1024 characters ending in "…", and nothing is lost
    (got,) = peer.requests
    summary = got.json["payload"]["summary"]
    assert len(summary) == MAX_SUMMARY_CHARS and summary.endswith("…")
    assert summary.startswith(f"{subject}: line one line two mmm") and "\n" not in summary
    assert got.json["payload"]["custom_details"]["message"] == message


def test_clip_counts_utf16_units_so_no_vendor_sees_more_than_the_limit():
    # Given text of astral characters (two UTF-16 units each) and of plain ones
    # Then a cut never splits a surrogate pair and never exceeds the limit however it is counted
    cut = clip("😀" * 600, 1024)
    assert len(cut.encode("utf-16-le")) // 2 <= 1024 and cut.endswith("…") and "\ufffd" not in cut
    assert clip("a" * 1024, 1024) == "a" * 1024
    assert clip("a" * 1025, 1024) == "a" * 1023 + "…"


def test_a_resend_is_the_same_event(peer, make_channel):
    # Given an alert sent, then sent again as attempt 2 (a retry after a lost reply)
    channel = make_channel()
    first = notification("PagerDuty")
    channel.send(first)
    channel.send(notification("PagerDuty", id=first.id, attempt=2))
    # Then both requests are byte for byte the same event, with the same dedup_key
    one, two = peer.requests
    assert one.body == two.body and one.json["dedup_key"] == first.id


@pytest.mark.parametrize("status", [200, 202])
def test_2xx_is_sent(peer, make_channel, status):
    peer.script(ENQUEUE, [Answer(status, body=b'{"status":"success"}')])
    assert make_channel().send(notification("PagerDuty")) == Sent(status_code=status)


@pytest.mark.parametrize("status", [400, 401, 403])
def test_invalid_event_and_auth_errors_are_permanent(peer, make_channel, status):
    # Given PagerDuty refusing the event
    body = b'{"status":"invalid event","message":"Event object is invalid","errors":["summary missing"]}'
    peer.script(ENQUEUE, [Answer(status, body=body)])
    # Then the attempt fails permanently, naming status and reason
    with pytest.raises(PermanentError) as caught:
        make_channel().send(notification("PagerDuty"))
    assert caught.value.status_code == status
    assert f"HTTP {status}" in str(caught.value) and "Event object is invalid" in str(caught.value)


def test_429_is_transient_and_passes_retry_after_up(peer, make_channel):
    # Given PagerDuty throttling the integration key with Retry-After: 2
    peer.script(ENQUEUE, [Answer(429, headers={"Retry-After": "2"}, body=b"")])
    # Then the attempt is transient and asks for two seconds
    with pytest.raises(TransientError) as caught:
        make_channel().send(notification("PagerDuty"))
    assert (caught.value.status_code, caught.value.retry_after) == (429, 2.0)


def test_503_is_transient(peer, make_channel):
    peer.script(ENQUEUE, [503])
    with pytest.raises(TransientError) as caught:
        make_channel().send(notification("PagerDuty"))
    assert (caught.value.status_code, caught.value.retry_after) == (503, None)


def test_the_routing_key_never_appears_in_the_error(peer, make_channel):
    # Given PagerDuty quoting the routing key back in an invalid-event reply
    peer.script(ENQUEUE, [Answer(400, body=f'{{"message":"unknown routing_key {ROUTING_KEY}"}}'.encode())])
    # When the alert fails
    with pytest.raises(PermanentError) as caught:
        make_channel().send(notification("PagerDuty"))
    # Then the key is redacted from the error, which still explains it
    assert "unknown routing_key" in str(caught.value) and ROUTING_KEY not in str(caught.value)
