"""The OpsGenie channel against a real receiver on 127.0.0.1: the exact alert, limits, outcomes."""

from __future__ import annotations

import pytest

from certctl_notify.channels.base import Sent
from certctl_notify.channels.http import OutboundHttp
from certctl_notify.channels.opsgenie import MAX_DESCRIPTION_CHARS, MAX_MESSAGE_CHARS, OpsGenieChannel
from certctl_notify.environment import load_settings
from certctl_notify.errors import PermanentError, TransientError
from certctl_notify.settings import OutboundSettings
from tests.support.receiver import Answer
from tests.support.vendor_receiver import VendorReceiver, headers_of, notification

LOOPBACK = OutboundSettings(allow=("127.0.0.1/32",), timeout_seconds=2)
API_KEY = "eb243592-GENIEKEYSECRET-1afdf565c889"
ALERTS = "/v2/alerts"
ACCEPTED = Answer(202, body=b'{"result":"Request will be processed","took":0.302,'
                            b'"requestId":"43a29c5c-3dbf-4fa4-9c26-f4f71023e120"}')


@pytest.fixture
def peer():
    with VendorReceiver(default=ACCEPTED) as receiver:
        yield receiver


@pytest.fixture
def make_channel(peer):
    """``make_channel(CERTCTL_OPSGENIE_PRIORITY=…)``: built from the environment as the worker builds
    it, aimed at the receiver; the HTTP client is closed afterwards."""
    http = OutboundHttp(LOOPBACK)

    def make(**env) -> OpsGenieChannel:
        base = {"CERTCTL_OPSGENIE_API_KEY": API_KEY, "CERTCTL_OPSGENIE_URL": peer.url_for(ALERTS)}
        settings = load_settings({**base, **env})
        return OpsGenieChannel.from_settings(settings, http)

    yield make
    http.close()


def test_one_alert_with_geniekey_auth_and_the_notification_id_as_alias(peer, make_channel):
    # Given an OpsGenie channel with the default priorities
    alert = notification("OpsGenie")
    # When it sends one alert
    sent = make_channel().send(alert)
    # Then OpsGenie got one authenticated JSON POST with exactly this alert, and 202 is sent
    assert sent == Sent(status_code=202, detail="requestId 43a29c5c-3dbf-4fa4-9c26-f4f71023e120")
    (got,) = peer.requests
    assert (got.method, got.path) == ("POST", ALERTS)
    assert headers_of(got)["authorization"] == f"GenieKey {API_KEY}"
    assert headers_of(got)["content-type"] == "application/json"
    assert got.json == {
        "message": "Certificate expires in 7 days",
        "alias": alert.id,
        "description": "api.example.com expires on 2030-01-08",
        "priority": "P3",
        "tags": ["certctl", "ExpirationWarning", "warning"],
        "details": {"notification_id": alert.id, "type": "ExpirationWarning", "severity": "warning",
                    "certificate_id": "mc-api-prod"},
        "entity": "mc-api-prod",
        "source": "certctl-notify",
    }


def test_without_a_certificate_there_is_no_entity(peer, make_channel):
    make_channel().send(notification("OpsGenie", certificate_id=None))
    (got,) = peer.requests
    assert "entity" not in got.json and "certificate_id" not in got.json["details"]
    assert all(isinstance(v, str) for v in got.json["details"].values())  # OpsGenie wants strings only


@pytest.mark.parametrize(("severity", "default", "overridden"), [
    ("critical", "P1", "P1"), ("error", "P2", "P1"), ("warning", "P3", "P4"), ("info", "P5", "P5"),
])
def test_priority_follows_the_alert_and_the_configured_mapping(
    peer, make_channel, severity, default, overridden
):
    # Given one channel with the default mapping and one with CERTCTL_OPSGENIE_PRIORITY overrides
    plain = make_channel()
    tuned = make_channel(CERTCTL_OPSGENIE_PRIORITY="error=P1,warning=P4")
    # When each sends an alert of this severity
    plain.send(notification("OpsGenie", severity=severity))
    tuned.send(notification("OpsGenie", severity=severity))
    # Then each alert carries the mapped priority
    assert [r.json["priority"] for r in peer.requests] == [default, overridden]


def test_one_priority_for_every_severity(peer, make_channel):
    # Given CERTCTL_OPSGENIE_PRIORITY set to a single priority
    make_channel(CERTCTL_OPSGENIE_PRIORITY="P2").send(notification("OpsGenie", severity="info"))
    (got,) = peer.requests
    assert got.json["priority"] == "P2"


def test_message_and_description_are_cut_to_opsgenie_limits(peer, make_channel):
    # Given a subject and a message longer than OpsGenie accepts
    make_channel().send(notification("OpsGenie", subject="S" * 300, message="m" * 20_000))
    # Then message is 130 characters and description 15000, each marked as cut
    (got,) = peer.requests
    assert got.json["message"] == "S" * (MAX_MESSAGE_CHARS - 1) + "…"
    assert got.json["description"] == "m" * (MAX_DESCRIPTION_CHARS - 1) + "…"


def test_a_resend_is_the_same_alert(peer, make_channel):
    # Given an alert sent, then sent again as attempt 2
    channel = make_channel()
    first = notification("OpsGenie")
    channel.send(first)
    channel.send(notification("OpsGenie", id=first.id, attempt=2))
    # Then both requests are the same alert with the same alias, so OpsGenie deduplicates them
    one, two = peer.requests
    assert one.body == two.body and one.json["alias"] == first.id


@pytest.mark.parametrize(("status", "body", "detail"), [
    (200, b'{"result":"ok"}', ""), (202, b"not json", ""), (202, b"[]", ""),
])
def test_2xx_is_sent_whatever_the_body(peer, make_channel, status, body, detail):
    peer.script(ALERTS, [Answer(status, body=body)])
    assert make_channel().send(notification("OpsGenie")) == Sent(status_code=status, detail=detail)


@pytest.mark.parametrize("status", [400, 401, 402, 403, 422])
def test_bad_request_auth_and_plan_errors_are_permanent(peer, make_channel, status):
    # Given OpsGenie refusing the request
    peer.script(ALERTS, [Answer(status, body=b'{"message":"Key format is not valid!","took":0.0}')])
    # Then the attempt fails permanently, naming status and reason
    with pytest.raises(PermanentError) as caught:
        make_channel().send(notification("OpsGenie"))
    assert caught.value.status_code == status
    assert f"HTTP {status}" in str(caught.value) and "Key format is not valid!" in str(caught.value)


def test_429_is_transient_and_passes_retry_after_up(peer, make_channel):
    peer.script(ALERTS, [Answer(429, headers={"Retry-After": "2"}, body=b'{"message":"Rate limit"}')])
    with pytest.raises(TransientError) as caught:
        make_channel().send(notification("OpsGenie"))
    assert (caught.value.status_code, caught.value.retry_after) == (429, 2.0)


def test_503_is_transient(peer, make_channel):
    peer.script(ALERTS, [503])
    with pytest.raises(TransientError) as caught:
        make_channel().send(notification("OpsGenie"))
    assert (caught.value.status_code, caught.value.retry_after) == (503, None)


def test_the_api_key_never_appears_in_the_error(peer, make_channel):
    # Given OpsGenie quoting the key and the Authorization header back
    echo = f'{{"message":"GenieKey {API_KEY} is disabled (key={API_KEY})"}}'.encode()
    peer.script(ALERTS, [Answer(401, body=echo)])
    # When the alert fails
    with pytest.raises(PermanentError) as caught:
        make_channel().send(notification("OpsGenie"))
    # Then the key is redacted from the error, which still explains it
    assert "is disabled" in str(caught.value) and API_KEY not in str(caught.value)
    assert "GENIEKEYSECRET" not in str(caught.value)


def test_the_geniekey_does_not_follow_a_redirect_to_another_origin(peer, make_channel):
    # Given OpsGenie answering 308 on its own origin, then 307 to another origin
    with VendorReceiver(default=ACCEPTED) as elsewhere:
        peer.script(ALERTS, [Answer(308, headers={"Location": "/v2/alerts/moved"})])
        peer.script("/v2/alerts/moved", [Answer(307, headers={"Location": elsewhere.url_for(ALERTS)})])
        alert = notification("OpsGenie")
        # When an alert is sent
        assert make_channel().send(alert).status_code == 202
    # Then OpsGenie's origin got the key on both hops, the other origin got the alert without it
    assert [headers_of(r)["authorization"] for r in peer.requests] == [f"GenieKey {API_KEY}"] * 2
    (moved,) = elsewhere.requests
    assert moved.json["alias"] == alert.id and headers_of(moved)["content-type"] == "application/json"
    assert "authorization" not in headers_of(moved) and API_KEY not in str(moved.headers)
