"""The Webhook channel against a real receiver on 127.0.0.1: signing, classification, caps, redaction."""

from __future__ import annotations

import base64
import gzip
import json
import time
import tracemalloc
import uuid
from datetime import UTC, datetime, timedelta, timezone
from email.utils import format_datetime

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from certctl_notify.channels.base import Notification, Sent
from certctl_notify.channels.http import OutboundHttp
from certctl_notify.channels.webhook import WebhookChannel
from certctl_notify.errors import PermanentError, TransientError
from certctl_notify.settings import OutboundSettings
from tests.support.receiver import Answer, RawPeer, headers_of, port_of, read_request

SECRET = "whsec_" + base64.b64encode(b"the-current-webhook-secret").decode()
ROTATED = "whsec_" + base64.b64encode(b"the-next-webhook-secret!!").decode()
LOOPBACK = OutboundSettings(allow=("127.0.0.1/32",), timeout_seconds=1)
TOKEN_PATH = "/hooks/T000/SECRETTOKEN?key=abc123"


def note(key: str | None = None, **overrides) -> Notification:
    fields = dict(
        id=str(uuid.uuid4()), type="expiring", channel="Webhook", recipient="ops@example.com",
        subject="Certificate expires in 7 days", message="api.example.com expires soon", severity="warning",
        certificate_id=key or f"cert-{uuid.uuid4().hex[:8]}", created_at=datetime.now(UTC), attempt=1,
    )
    return Notification(**{**fields, **overrides})


@pytest.fixture
def make_channel():
    """``make_channel(url, secrets=…, headers=…, outbound=…)``; its HTTP client is closed afterwards."""
    clients = []

    def make(url, *, secrets=(SECRET,), headers=(), outbound=LOOPBACK, clock=None) -> WebhookChannel:
        http = OutboundHttp(outbound)
        clients.append(http)
        extra = {"clock": clock} if clock else {}
        return WebhookChannel(url, tuple(secrets), tuple(headers), http, **extra)

    yield make
    for http in clients:
        http.close()


# --- signing and the request a receiver sees ---------------------------------------------------


def test_signed_request_verifies_and_carries_the_envelope(receiver, make_channel):
    # Given a webhook with one secret and two custom headers
    channel = make_channel(receiver.url, headers=(("x-team", "pki"), ("authorization", "Bearer t0ken-value")))
    alert = note()
    # When it sends one alert
    sent = channel.send(alert)
    # Then the receiver verifies the signature with the secret and sees the envelope and headers
    assert sent == Sent(status_code=200)
    (got,) = receiver.requests
    assert Webhook(SECRET).verify(got.body, headers_of(got)) == got.json
    assert headers_of(got)["webhook-id"] == alert.id
    assert headers_of(got)["x-team"] == "pki" and headers_of(got)["authorization"] == "Bearer t0ken-value"
    assert headers_of(got)["content-type"] == "application/json"
    assert got.json == {
        "type": "certctl.expiring",
        "timestamp": alert.created_at.isoformat(),
        "data": {
            "id": alert.id, "type": "expiring", "certificate_id": alert.certificate_id,
            "recipient": "ops@example.com", "subject": "Certificate expires in 7 days",
            "message": "api.example.com expires soon", "severity": "warning", "attempt": 1,
        },
    }


def test_rotated_secrets_each_verify_the_same_request(receiver, make_channel):
    # Given a webhook in the middle of a secret rotation (two secrets)
    channel = make_channel(receiver.url, secrets=(SECRET, ROTATED))
    # When it sends one alert
    channel.send(note())
    # Then a receiver holding either secret accepts it, and one holding another secret does not
    (got,) = receiver.requests
    assert len(headers_of(got)["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, ROTATED):
        Webhook(secret).verify(got.body, headers_of(got))
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"some-other-secret").decode()).verify(got.body, headers_of(got))


def test_signature_verifies_when_the_clock_is_not_in_utc(receiver, make_channel):
    # Given a channel whose clock reports local time two hours east of UTC
    east = timezone(timedelta(hours=2))
    channel = make_channel(receiver.url, clock=lambda: datetime.now(east))
    # When it sends
    channel.send(note())
    # Then the timestamp header is the real epoch and the signature over it verifies
    (got,) = receiver.requests
    assert abs(int(headers_of(got)["webhook-timestamp"]) - time.time()) < 5
    Webhook(SECRET).verify(got.body, headers_of(got))


def test_a_retry_carries_the_same_webhook_id(receiver, make_channel):
    # Given an alert sent once, and again as attempt 2 (a retry after a lost reply)
    channel = make_channel(receiver.url)
    first = note()
    channel.send(first)
    channel.send(note(first.certificate_id, id=first.id, attempt=2))
    # Then the receiver can recognise the duplicate by its webhook-id
    assert [headers_of(r)["webhook-id"] for r in receiver.requests] == [first.id, first.id]


def test_configured_protocol_headers_are_replaced_not_duplicated(make_channel):
    # Given custom headers that clash, in another case, with the headers the protocol sets
    seen = []
    peer = RawPeer(lambda conn: (seen.append(read_request(conn)), conn.sendall(
        b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))).start()
    try:
        channel = make_channel(peer.url(), headers=(("content-type", "text/plain"), ("Webhook-Id", "forged")))
        alert = note()
        # When the alert is sent
        assert channel.send(alert) == Sent(status_code=204)
    finally:
        peer.stop()
    # Then each protocol header travels once, with the protocol's value
    lines = [line.lower() for line in seen[0].split(b"\r\n\r\n")[0].split(b"\r\n")[1:]]
    assert [v for v in lines if v.startswith(b"content-type:")] == [b"content-type: application/json"]
    assert [v for v in lines if v.startswith(b"webhook-id:")] == [f"webhook-id: {alert.id}".encode()]


# --- classification ------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204])
def test_any_2xx_is_sent(receiver, make_channel, status):
    # Given a receiver that answers with a 2xx
    alert = note()
    receiver.script(alert.certificate_id, [Answer(status=status, body=b"" if status == 204 else b"ok")])
    # When the alert is sent, then it is Sent with that code
    assert make_channel(receiver.url).send(alert) == Sent(status_code=status)


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503])
def test_retryable_statuses_are_transient(receiver, make_channel, status):
    # Given a receiver that answers with a "try later" status
    alert = note()
    receiver.script(alert.certificate_id, [status])
    # When the alert is sent, then the error is transient and carries the code
    with pytest.raises(TransientError) as caught:
        make_channel(receiver.url).send(alert)
    assert caught.value.status_code == status
    assert caught.value.retry_after is None


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 422])
def test_other_4xx_are_permanent(receiver, make_channel, status):
    # Given a receiver that rejects the request
    alert = note()
    receiver.script(alert.certificate_id, [status])
    # When the alert is sent, then the error is permanent (no retry can help) and carries the code
    with pytest.raises(PermanentError) as caught:
        make_channel(receiver.url).send(alert)
    assert caught.value.status_code == status


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_seconds_is_honoured(receiver, make_channel, status):
    # Given a receiver that asks for 7 seconds of patience
    alert = note()
    receiver.script(alert.certificate_id, [Answer(status=status, headers={"Retry-After": "7"})])
    # When the alert is sent, then the transient error carries that wait
    with pytest.raises(TransientError) as caught:
        make_channel(receiver.url).send(alert)
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize("usegmt", [True, False])
def test_retry_after_http_date_becomes_seconds(receiver, make_channel, usegmt):
    # Given a receiver that asks to come back at a date 60 s away (GMT, or the "-0000" zone form)
    alert = note()
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=usegmt)
    receiver.script(alert.certificate_id, [Answer(status=503, headers={"Retry-After": when})])
    # When the alert is sent, then the wait is about 60 s
    with pytest.raises(TransientError) as caught:
        make_channel(receiver.url).send(alert)
    assert 55 <= caught.value.retry_after <= 61


def test_unparseable_retry_after_is_ignored(receiver, make_channel):
    # Given a 503 with a Retry-After nobody can read
    alert = note()
    receiver.script(alert.certificate_id, [Answer(status=503, headers={"Retry-After": "soon-ish"})])
    # When sent, then it is still a plain transient error (our own backoff applies)
    with pytest.raises(TransientError) as caught:
        make_channel(receiver.url).send(alert)
    assert caught.value.retry_after is None and caught.value.status_code == 503


def test_connection_refused_is_transient(make_channel):
    # Given a port where nothing listens
    peer = RawPeer(lambda conn: None)
    url = peer.url()
    peer.stop()
    # When the alert is sent, then the failure is transient
    with pytest.raises(TransientError, match="ConnectError"):
        make_channel(url).send(note())


def test_a_peer_that_never_answers_times_out_as_transient(make_channel):
    # Given a peer that accepts connections but never answers, and a 0.5 s budget
    peer = RawPeer(accept=False).start()
    quick = OutboundSettings(allow=("127.0.0.1/32",), timeout_seconds=0.5)
    channel = make_channel(peer.url(), outbound=quick)
    started = time.monotonic()
    try:
        # When the alert is sent
        with pytest.raises(TransientError, match="Timeout"):
            channel.send(note())
    finally:
        peer.stop()
    # Then the worker was held about as long as the budget, not longer
    assert 0.4 <= time.monotonic() - started < 2.0


# --- response bodies -----------------------------------------------------------------------------


def test_a_20_mb_reply_is_not_read_into_memory(make_channel):
    # Given a peer that answers 200 and then streams 20 MB
    total, written = 20 * 1024 * 1024, []
    chunk = b"x" * 65536

    def endless(conn):
        read_request(conn)
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {total}\r\n\r\n".encode())
        sent = 0
        try:
            while sent < total:
                conn.sendall(chunk)
                sent += len(chunk)
        finally:
            written.append(sent)

    peer = RawPeer(endless).start()
    channel = make_channel(peer.url())
    tracemalloc.start()
    started = time.monotonic()
    try:
        # When the alert is sent
        assert channel.send(note()) == Sent(status_code=200)
        elapsed = time.monotonic() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    deadline = time.monotonic() + 5
    while not written and time.monotonic() < deadline:
        time.sleep(0.02)
    peer.stop()
    # Then it returns at once, holds well under 20 MB, and the peer could not push the whole body
    assert elapsed < 2.0
    assert peak < 4 * 1024 * 1024
    assert written and written[0] < total


def test_a_compressed_reply_is_never_inflated(make_channel):
    # Given a peer that answers 500 with a 50 KB gzip body that would inflate to 50 MB
    bomb = gzip.compress(b"\0" * (50 * 1024 * 1024))

    def answer(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 500 Oops\r\nContent-Encoding: gzip\r\n"
                     + f"Content-Length: {len(bomb)}\r\n\r\n".encode() + bomb)

    peer = RawPeer(answer).start()
    channel = make_channel(peer.url())
    tracemalloc.start()
    try:
        # When the alert is sent
        with pytest.raises(TransientError) as caught:
            channel.send(note())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        peer.stop()
    # Then memory stays small and the stored error is short, printable text
    assert peak < 4 * 1024 * 1024
    assert str(caught.value).isprintable() and len(str(caught.value)) < 400


def test_a_large_error_body_is_cut_to_a_short_snippet(receiver, make_channel):
    # Given a receiver answering 500 with a 1 MB body
    alert = note()
    receiver.script(alert.certificate_id, [Answer(status=500, body=b"E" * (1024 * 1024))])
    # When sent, then last_error holds at most about 300 characters of it
    with pytest.raises(TransientError) as caught:
        make_channel(receiver.url).send(alert)
    message = str(caught.value)
    assert message.startswith(f"HTTP 500 from http://127.0.0.1:{port_of(receiver)}/…: EEE")
    assert message.count("E") <= 300


def test_binary_error_body_leaves_no_nul_in_the_error(receiver, make_channel):
    # Given a receiver answering 502 with binary bytes (PostgreSQL text refuses NUL)
    alert = note()
    receiver.script(alert.certificate_id, [Answer(status=502, body=b"bad\x00gateway\x01\xff")])
    # When sent, then the error text is printable
    with pytest.raises(TransientError) as caught:
        make_channel(receiver.url).send(alert)
    assert str(caught.value).isprintable() and "gateway" in str(caught.value)


# --- secrets stay out of errors ------------------------------------------------------------------


@pytest.mark.parametrize("echo", [
    "no hook at {url}",
    '{{"error": "unknown hook", "url": "{url}"}}',
    "no route for {path}",
    "bad key abc123 for SECRETTOKEN",
])
def test_error_text_never_holds_the_url_token(receiver, make_channel, echo):
    # Given a webhook URL with a token in its path and query, and a peer echoing it in a 500
    url = f"http://127.0.0.1:{port_of(receiver)}{TOKEN_PATH}"
    alert = note()
    body = echo.format(url=url, path=TOKEN_PATH)
    receiver.script(alert.certificate_id, [Answer(status=500, body=body.encode())])
    # When the alert is sent
    with pytest.raises(TransientError) as caught:
        make_channel(url).send(alert)
    # Then the error names the host but neither the token nor the key
    message = str(caught.value)
    assert f"127.0.0.1:{port_of(receiver)}" in message
    assert "SECRETTOKEN" not in message and "abc123" not in message
    assert receiver.requests[0].path == TOKEN_PATH  # the real URL was used all the same


def test_a_token_cut_by_the_snippet_limit_leaves_no_prefix(receiver, make_channel):
    # Given a 500 whose body has the token exactly where the 300-character snippet ends
    url = f"http://127.0.0.1:{port_of(receiver)}{TOKEN_PATH}"
    alert = note()
    receiver.script(alert.certificate_id, [Answer(status=500, body=b"x" * 295 + b"SECRETTOKEN")])
    # When sent, then not even the token's first letters are shown
    with pytest.raises(TransientError) as caught:
        make_channel(url).send(alert)
    assert "SECRE" not in str(caught.value)


def test_connection_errors_never_hold_the_url_token(make_channel):
    # Given a token-bearing URL on a port where nothing listens
    peer = RawPeer(lambda conn: None)
    url = peer.url(TOKEN_PATH)
    peer.stop()
    # When the alert is sent, then the transient error holds neither the token nor the key
    with pytest.raises(TransientError) as caught:
        make_channel(url).send(note())
    assert "SECRETTOKEN" not in str(caught.value) and "abc123" not in str(caught.value)


def test_header_values_and_secrets_echoed_back_are_redacted(receiver, make_channel):
    # Given a receiver that echoes our Authorization header and signing secret in a 401
    alert = note()
    echo = f"bad Bearer t0ken-value / {SECRET}".encode()
    receiver.script(alert.certificate_id, [Answer(status=401, body=echo)])
    channel = make_channel(receiver.url, headers=(("authorization", "Bearer t0ken-value"),))
    # When sent, then neither appears in the permanent error
    with pytest.raises(PermanentError) as caught:
        channel.send(alert)
    assert "t0ken-value" not in str(caught.value) and SECRET not in str(caught.value)


# --- URLs that are not http ----------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "file:///etc/passwd", "ftp://user:pw0rd@ftp.example/SECRETTOKEN", "gopher://127.0.0.1:70/_x",
    "http:///no-host", "http://127.0.0.1:notaport/SECRETTOKEN",
])
def test_non_http_urls_are_permanent(make_channel, url):
    # Given a webhook URL that is not a usable http(s) URL
    # When the alert is sent, then the error is permanent and keeps the credentials and token out
    with pytest.raises(PermanentError) as caught:
        make_channel(url).send(note())
    assert "pw0rd" not in str(caught.value) and "SECRETTOKEN" not in str(caught.value)


def test_receiver_body_is_the_signed_json(receiver, make_channel):
    # Given a message with non-ASCII text
    alert = note(message="Zertifikat läuft ab — 7 Tage")
    # When sent, then the signed body is UTF-8 JSON that decodes back to the same text
    make_channel(receiver.url).send(alert)
    (got,) = receiver.requests
    assert json.loads(got.body.decode("utf-8"))["data"]["message"] == "Zertifikat läuft ab — 7 Tage"
    Webhook(SECRET).verify(got.body, headers_of(got))
