"""Outbound HTTP against real peers on loopback: the SSRF guard, pinning, redirects, time budget.

No DNS exists here, so names go through a fake resolver passed to `OutboundHttp`; connections are
real. Loopback is what the guard refuses by default, which makes it the right place to prove it.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
import time
import uuid
from datetime import UTC, datetime

import pytest
import trustme
from standardwebhooks import Webhook

from certctl_notify.channels.base import Notification, Sent
from certctl_notify.channels.http import OutboundHttp, retry_after_seconds
from certctl_notify.channels.webhook import WebhookChannel
from certctl_notify.errors import PermanentError, TransientError
from certctl_notify.settings import OutboundSettings
from tests.support.receiver import Answer, RawPeer, Receiver, headers_of, port_of, read_request

SECRET = "whsec_" + base64.b64encode(b"secret-for-the-http-tests").decode()


def ipv6_loopback_bindable() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


def note() -> Notification:
    return Notification(
        id=str(uuid.uuid4()), type="expired", channel="Webhook", recipient="", subject="Expired",
        message="www.example.com has expired", severity="critical",
        certificate_id=f"cert-{uuid.uuid4().hex[:8]}", created_at=datetime.now(UTC), attempt=1,
    )


class FakeDns:
    """A resolver for names that cannot exist here; counts lookups. IP literals resolve to themselves."""

    def __init__(self, **names: str):
        self.names = {name.replace("_", "."): address for name, address in names.items()}
        self.lookups: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host in self.names:
            return [self.names[host]]
        try:
            socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
            return [host]
        except OSError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None


@pytest.fixture
def make_channel():
    """``make_channel(url, allow=…, resolver=…, timeout=…, headers=…, tls=…)`` with the client closed
    afterwards; ``tls`` is the client's verifying context."""
    clients = []

    def make(url, *, allow=(), resolver=None, timeout=1.0, headers=(), tls=None) -> WebhookChannel:
        settings = OutboundSettings(allow=tuple(allow), timeout_seconds=timeout)
        http = OutboundHttp(settings, **({"resolver": resolver} if resolver else {}), tls_context=tls)
        clients.append(http)
        return WebhookChannel(url, (SECRET,), tuple(headers), http)

    yield make
    for http in clients:
        http.close()


# --- the SSRF guard ------------------------------------------------------------------------------


@pytest.mark.parametrize("host, why", [
    ("127.0.0.1", "loopback"),
    ("127.9.9.9", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("[::ffff:127.0.0.1]", "loopback"),
    ("internal.test", "loopback"),  # a name whose DNS answer is loopback
])
def test_loopback_is_refused_without_an_allow_entry(receiver, make_channel, host, why):
    # Given an empty allow list and a URL that would reach the local receiver
    dns = FakeDns(internal_test="127.0.0.1")
    channel = make_channel(f"http://{host}:{port_of(receiver)}/hook", resolver=dns)
    # When the alert is sent
    with pytest.raises(PermanentError) as caught:
        channel.send(note())
    # Then it is refused, the error says how to allow it, and the receiver saw nothing
    assert why in str(caught.value) and "CERTCTL_OUTBOUND_ALLOW" in str(caught.value)
    assert receiver.requests == []


@pytest.mark.parametrize("url, why", [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]:8080/", "link-local"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[::]/", "unspecified"),
    ("http://metadata.test/computeMetadata/v1/", "link-local"),
])
def test_link_local_multicast_and_unspecified_are_refused_before_connecting(make_channel, url, why):
    # Given an empty allow list and a cloud-metadata, multicast or unspecified destination
    channel = make_channel(url, resolver=FakeDns(metadata_test="169.254.169.254"), timeout=5)
    started = time.monotonic()
    # When the alert is sent, then it is refused at once: no connection is even attempted
    with pytest.raises(PermanentError, match=f"{why}.*CERTCTL_OUTBOUND_ALLOW"):
        channel.send(note())
    assert time.monotonic() - started < 0.5


@pytest.mark.skipif(not ipv6_loopback_bindable(), reason="::1 cannot be bound on this host")
def test_ipv6_loopback_is_refused_and_deliverable_when_allowed(make_channel):
    # Given a peer listening on [::1]
    peer = RawPeer(lambda conn: (read_request(conn), conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")), host="::1").start()
    try:
        # When the alert is sent with an empty allow list, then it is refused and nothing connects
        with pytest.raises(PermanentError, match="loopback"):
            make_channel(peer.url()).send(note())
        assert peer.connections == 0
        # When ::1/128 is allowed, then the same alert is delivered over IPv6
        assert make_channel(peer.url(), allow=("::1/128",)).send(note()) == Sent(status_code=200)
        assert peer.connections == 1
    finally:
        peer.stop()


def test_ipv6_loopback_is_refused_even_with_nothing_listening(make_channel):
    # Given an empty allow list, when sending to [::1], then the guard refuses before any connect
    with pytest.raises(PermanentError, match="loopback.*CERTCTL_OUTBOUND_ALLOW"):
        make_channel("http://[::1]:9/hook").send(note())


@pytest.mark.parametrize("allow", [("127.0.0.1/32",), ("127.0.0.0/8",), ("127.0.0.1",)])
def test_an_allowed_network_is_delivered(receiver, make_channel, allow):
    # Given the receiver's address allowed by CIDR or as an exact address
    # When the alert is sent, then it arrives
    assert make_channel(receiver.url, allow=allow).send(note()) == Sent(status_code=200)
    assert len(receiver.requests) == 1


def test_an_allowed_host_name_is_delivered_pinned_to_the_checked_address(receiver, make_channel):
    # Given "allowed.test" allowed by name and resolving (fake DNS) to the receiver's loopback address
    dns = FakeDns(allowed_test="127.0.0.1")
    url = f"http://allowed.test:{port_of(receiver)}/hook"
    channel = make_channel(url, allow=("allowed.test",), resolver=dns)
    # When the alert is sent
    assert channel.send(note()) == Sent(status_code=200)
    # Then the connection went to the checked address (the system cannot resolve "allowed.test"),
    # resolved once, and the receiver still sees the original name in Host
    (got,) = receiver.requests
    assert headers_of(got)["host"] == f"allowed.test:{port_of(receiver)}"
    assert dns.lookups == ["allowed.test"]
    Webhook(SECRET).verify(got.body, headers_of(got))


def test_allowing_one_name_does_not_allow_its_address(receiver, make_channel):
    # Given only "allowed.test" allowed, when sending to the same address by IP, then it is refused
    with pytest.raises(PermanentError, match="CERTCTL_OUTBOUND_ALLOW"):
        make_channel(receiver.url, allow=("allowed.test",), resolver=FakeDns()).send(note())
    assert receiver.requests == []


def test_dns_failure_is_transient(make_channel):
    # Given a name that does not resolve (yet), when sending, then it is worth retrying
    with pytest.raises(TransientError, match="DNS lookup of nowhere.test failed"):
        make_channel("http://nowhere.test/hook", resolver=FakeDns()).send(note())


def test_an_unencodable_host_name_is_permanent(make_channel):
    # Given a host name with a label longer than DNS allows, resolved by the real resolver
    url = f"http://{'a' * 70}.example/hook"
    # When sending, then no retry can help: the error is permanent
    with pytest.raises(PermanentError, match="not a valid host name"):
        make_channel(url).send(note())


# --- redirects -----------------------------------------------------------------------------------


def redirect_to(receiver, location: str, status: int = 307) -> Notification:
    alert = note()
    receiver.script(alert.certificate_id, [Answer(status=status, headers={"Location": location})])
    return alert


@pytest.mark.parametrize("where", ["loopback-ip", "metadata"])
def test_a_redirect_to_a_forbidden_address_is_refused(receiver, second_receiver, make_channel, where):
    # Given only "allowed.test" allowed, and it answers 307 to a loopback IP or the metadata service
    location = {
        "loopback-ip": f"http://127.0.0.1:{port_of(second_receiver)}/hook",
        "metadata": "http://169.254.169.254/latest/meta-data/",
    }[where]
    alert = redirect_to(receiver, location)
    url = f"http://allowed.test:{port_of(receiver)}/hook"
    channel = make_channel(url, allow=("allowed.test",), resolver=FakeDns(allowed_test="127.0.0.1"))
    # When the alert is sent
    with pytest.raises(PermanentError, match="CERTCTL_OUTBOUND_ALLOW"):
        channel.send(alert)
    # Then the first hop was made and the forbidden one was not
    assert len(receiver.requests) == 1 and second_receiver.requests == []


def test_a_307_to_an_allowed_peer_is_followed_with_the_same_signed_post(receiver, second_receiver,
                                                                        make_channel):
    # Given an allowed peer that moved to another allowed port with a 307
    alert = redirect_to(receiver, f"http://127.0.0.1:{port_of(second_receiver)}/moved")
    # When the alert is sent
    assert make_channel(receiver.url, allow=("127.0.0.1/32",)).send(alert) == Sent(status_code=200)
    # Then the new location got the same POST, and its signature still verifies
    (moved,) = second_receiver.requests
    assert moved.method == "POST" and moved.path == "/moved" and moved.body == receiver.requests[0].body
    Webhook(SECRET).verify(moved.body, headers_of(moved))


@pytest.mark.parametrize("status", [301, 302, 303])
def test_redirects_that_would_turn_into_a_get_are_not_followed(receiver, second_receiver, make_channel,
                                                               status):
    # Given an allowed peer answering 301/302/303 to another allowed peer
    alert = redirect_to(receiver, f"http://127.0.0.1:{port_of(second_receiver)}/moved", status)
    # When sent, then the error is permanent and names the code; the target saw nothing
    with pytest.raises(PermanentError, match=f"HTTP {status} redirect") as caught:
        make_channel(receiver.url, allow=("127.0.0.1/32",)).send(alert)
    assert caught.value.status_code == status
    assert second_receiver.requests == []


def test_a_redirect_loop_stops(receiver, make_channel):
    # Given a peer that redirects to itself forever
    alert = redirect_to(receiver, receiver.url)
    # When sent, then it gives up permanently after the first request and three redirects
    with pytest.raises(PermanentError, match="more than 3 redirects"):
        make_channel(receiver.url, allow=("127.0.0.1/32",), timeout=5).send(alert)
    assert len(receiver.requests) == 4


def test_only_protocol_headers_follow_a_redirect_to_another_origin(receiver, second_receiver, make_channel):
    # Given configured headers (a credential, an API token, a plain label), and a peer that redirects
    # once on its own origin, then to another port
    alert = note()
    port, other = port_of(receiver), port_of(second_receiver)
    receiver.script(alert.certificate_id, [
        Answer(status=308, headers={"Location": "/same-origin"}),
        Answer(status=307, headers={"Location": f"http://127.0.0.1:{other}/elsewhere"}),
    ])
    configured = (("authorization", "Bearer our-api-key"), ("X-Api-Token", "s3cret"), ("x-team", "pki"),
                  ("User-Agent", "pki-bot"))
    channel = make_channel(f"http://127.0.0.1:{port}/hook", allow=("127.0.0.1/32",), headers=configured)
    # When the alert is sent
    assert channel.send(alert) == Sent(status_code=200)
    # Then the same origin got every configured header both times
    for got in receiver.requests:
        names = ("authorization", "x-api-token", "x-team", "user-agent")
        assert {name: headers_of(got).get(name) for name in names} == {
            "authorization": "Bearer our-api-key", "x-api-token": "s3cret", "x-team": "pki", "user-agent": "pki-bot"}
    # And the other origin got the same signed POST, but none of the configured headers
    (elsewhere,) = second_receiver.requests
    got = headers_of(elsewhere)
    assert elsewhere.body == receiver.requests[0].body and got["webhook-id"] == alert.id
    Webhook(SECRET).verify(elsewhere.body, got)
    assert got["content-type"] == "application/json" and got["host"] == f"127.0.0.1:{other}"
    assert not {"authorization", "x-api-token", "x-team"} & got.keys() and got.get("user-agent") != "pki-bot"
    assert "s3cret" not in str(got) and "our-api-key" not in str(got)


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture(scope="module")
def _https_receiver(ca):
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("hooks.test").configure_cert(server_tls)
    started = Receiver(tls=server_tls).start()
    yield started
    started.stop()


@pytest.fixture
def https_receiver(_https_receiver):
    """A receiver serving https for "hooks.test" (resolve it with `FakeDns`), its certificate from `ca`."""
    _https_receiver.reset()
    return _https_receiver


@pytest.fixture
def trusting(ca):
    """A client TLS context that verifies certificates against `ca` (and only it)."""
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def test_a_redirect_from_https_to_plain_http_is_refused(https_receiver, second_receiver, make_channel, trusting):
    # Given an https peer whose certificate we trust, answering 307 to an allowed plain-http URL
    alert = redirect_to(https_receiver, f"http://127.0.0.1:{port_of(second_receiver)}/plain?token=SECRETTOKEN")
    url = f"https://hooks.test:{port_of(https_receiver)}/hook"
    channel = make_channel(url, allow=("127.0.0.1/32",), resolver=FakeDns(hooks_test="127.0.0.1"), tls=trusting)
    # When the alert is sent
    with pytest.raises(PermanentError, match="downgrade") as caught:
        channel.send(alert)
    # Then the https peer got it over TLS, the plain-http URL got nothing, and the error names both
    # origins but not the redirect's token
    assert len(https_receiver.requests) == 1 and second_receiver.requests == []
    assert f"hooks.test:{port_of(https_receiver)}" in str(caught.value)
    assert f"127.0.0.1:{port_of(second_receiver)}" in str(caught.value)
    assert "SECRETTOKEN" not in str(caught.value)


def test_a_redirect_from_http_to_https_is_followed(receiver, https_receiver, make_channel, trusting):
    # Given a plain-http peer that moved to https with a 307
    alert = redirect_to(receiver, f"https://hooks.test:{port_of(https_receiver)}/moved")
    channel = make_channel(receiver.url, allow=("127.0.0.1/32",), resolver=FakeDns(hooks_test="127.0.0.1"),
                           tls=trusting)
    # When the alert is sent, then it arrives at the https location, signed
    assert channel.send(alert) == Sent(status_code=200)
    (moved,) = https_receiver.requests
    assert moved.path == "/moved"
    Webhook(SECRET).verify(moved.body, headers_of(moved))


# --- shared client hygiene and the time budget ---------------------------------------------------


def test_cookies_set_by_one_peer_are_never_sent_back(receiver, make_channel):
    # Given a peer that sets a cookie on its reply
    first = note()
    receiver.script(first.certificate_id, [Answer(headers={"Set-Cookie": "session=peer-chosen; Path=/"})])
    channel = make_channel(receiver.url, allow=("127.0.0.1/32",))
    # When two alerts go out through the same client
    channel.send(first)
    channel.send(note())
    # Then the second request carries no cookie
    assert "cookie" not in headers_of(receiver.requests[1])


def test_redirect_hops_share_one_time_budget(receiver, make_channel):
    # Given a peer that takes 0.4 s to answer each hop with a redirect to itself, and a 1 s budget
    alert = note()
    receiver.script(alert.certificate_id, [Answer(status=307, delay=0.4, headers={"Location": receiver.url})])
    channel = make_channel(receiver.url, allow=("127.0.0.1/32",), timeout=1.0)
    started = time.monotonic()
    # When the alert is sent, then it times out (transient) within the budget, not 4 × 0.4 s later
    with pytest.raises(TransientError, match="Timeout"):
        channel.send(alert)
    assert time.monotonic() - started < 1.4


def test_a_trickling_body_cannot_hold_the_worker_past_the_budget(make_channel):
    # Given a peer that answers 200 and then sends its body one byte every 50 ms, forever
    def trickle(conn):
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
        for _ in range(100000):
            conn.sendall(b".")
            time.sleep(0.05)

    peer = RawPeer(trickle).start()
    started = time.monotonic()
    try:
        # When the alert is sent with a 0.5 s budget, then the 200 counts and the send returns in time
        assert make_channel(peer.url(), allow=("127.0.0.1/32",), timeout=0.5).send(note()) == Sent(200)
    finally:
        peer.stop()
    assert time.monotonic() - started < 1.5


# --- Retry-After parsing -------------------------------------------------------------------------

NOW = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("value, seconds", [
    ("7", 7.0),
    (" 120 ", 120.0),
    ("0", 0.0),
    ("Sat, 01 Mar 2025 12:00:30 GMT", 30.0),
    ("Sat, 01 Mar 2025 12:01:00 -0000", 60.0),
    ("Sat, 01 Mar 2025 11:00:00 GMT", 0.0),  # a date in the past: retry now
    (None, None),
    ("", None),
    ("soon", None),
    ("-5", None),
    ("1.5", None),
    ("٣", None),  # an Arabic-Indic digit is not an HTTP delta-seconds
])
def test_retry_after_seconds(value, seconds):
    # Given a Retry-After header value, when parsed at a fixed moment, then the wait is as listed
    assert retry_after_seconds(value, now=NOW) == seconds


def test_reply_body_is_sent_with_identity_encoding_requested(make_channel):
    # Given a peer that records the raw request
    seen = []
    peer = RawPeer(lambda conn: (seen.append(read_request(conn)), conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"))).start()
    try:
        # When an alert is sent
        make_channel(peer.url(), allow=("127.0.0.1/32",)).send(note())
    finally:
        peer.stop()
    # Then it asked for an uncompressed reply (what it reads is capped, so nothing may inflate it)
    head = seen[0].split(b"\r\n\r\n")[0].lower()
    assert b"accept-encoding: identity" in head
    assert json.loads(seen[0].split(b"\r\n\r\n", 1)[1])["type"] == "certctl.expired"
