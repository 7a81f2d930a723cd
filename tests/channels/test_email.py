"""The Email channel against real SMTP servers (aiosmtpd) on 127.0.0.1: TLS modes, AUTH, reply codes,
timeouts, header injection, and a delivered mail reported as delivered."""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest
import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from certctl_notify.channels.base import Notification, Sent
from certctl_notify.channels.email import EmailChannel
from certctl_notify.errors import PermanentError, TransientError
from tests.support.receiver import RawPeer

PASSWORD = "s3cret-relay-password"


def note(**overrides) -> Notification:
    fields = dict(
        id=f"notif_{uuid.uuid4().hex}", type="ExpirationWarning", channel="Email",
        recipient="ops@example.com", subject="Certificate expires in 7 days",
        message="api.example.com expires in 7 days", severity="warning", certificate_id="cert-api",
        created_at=datetime.now(UTC), attempt=1,
    )
    return Notification(**{**fields, **overrides})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    """An aiosmtpd handler that keeps what it accepted; ``rcpt``/``data`` are the replies to give."""

    def __init__(self, *, rcpt: str = "250 OK", data: str = "250 OK", hang_up_after_data: bool = False):
        self.rcpt, self.data, self.hang_up_after_data = rcpt, data, hang_up_after_data
        self.messages: list[bytes] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.rcpt.startswith("250"):
            envelope.rcpt_tos.append(address)
        return self.rcpt

    async def handle_DATA(self, server, session, envelope):
        if self.data.startswith("250"):
            self.messages.append(envelope.content)
        if self.hang_up_after_data:  # after the reply is written: the client's QUIT finds no server
            server.loop.call_soon(server.transport.close)
        return self.data

    def parsed(self, index: int = -1) -> email.message.EmailMessage:
        return email.message_from_bytes(self.messages[index], policy=email.policy.default)


@pytest.fixture
def smtp_server():
    """``smtp_server(mailbox, **controller_kwargs)`` starts aiosmtpd on a free port; returns the port."""
    started = []

    def start(mailbox: Mailbox, **kwargs) -> int:
        controller = Controller(mailbox, hostname="127.0.0.1", port=free_port(), **kwargs)
        controller.start()
        started.append(controller)
        return controller.port

    yield start
    for controller in started:
        controller.stop()


@pytest.fixture(scope="module")
def ca():
    return trustme.CA()


@pytest.fixture
def server_tls(ca):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.fixture
def ca_file(ca, tmp_path):
    path = tmp_path / "relay-ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def channel(port: int, **kwargs) -> EmailChannel:
    return EmailChannel("127.0.0.1", port, **{"tls": "none", "sender": "certctl <alerts@certctl.example>",
                                             "timeout_seconds": 5, **kwargs})


def test_plain_relay_delivers_a_complete_message_with_a_utf8_subject(smtp_server):
    # Given a plain relay
    mailbox = Mailbox()
    port = smtp_server(mailbox)
    subject = "Zertifikat läuft ab — api.example"
    # When a notification with a non-ASCII subject is sent
    notification = note(subject=subject)
    sent = channel(port).send(notification)
    # Then the relay accepted it, and the mail reads as the user expects
    assert sent == Sent(status_code=250, detail=f"accepted by 127.0.0.1:{port}")
    got = mailbox.parsed()
    assert got["Subject"] == subject
    assert got["From"] == "certctl <alerts@certctl.example>"
    assert got["To"] == "ops@example.com"
    assert got["MIME-Version"] == "1.0"
    assert got["Date"].datetime.tzinfo is not None
    assert got["Message-ID"] == f"<{notification.id}@certctl.example>"
    body = got.get_content()
    assert "api.example.com expires in 7 days" in body
    assert notification.id in body and "cert-api" in body and "warning" in body
    # And the raw message is 7-bit, so any relay takes it (the subject is RFC 2047-encoded)
    assert mailbox.messages[0].isascii()


def test_a_resend_of_the_same_notification_keeps_its_message_id(smtp_server):
    # Given a notification sent twice (a retry after an ambiguous failure)
    mailbox = Mailbox()
    port = smtp_server(mailbox)
    notification = note()
    channel(port).send(notification)
    channel(port).send(note(id=notification.id, attempt=2))
    # Then both copies carry one Message-ID, so mail clients can tell them apart from new alerts
    assert mailbox.parsed(0)["Message-ID"] == mailbox.parsed(1)["Message-ID"]


def test_starttls_with_a_private_ca_delivers_and_without_it_fails_verification(
    smtp_server, server_tls, ca_file
):
    # Given a relay offering STARTTLS with a certificate from a private CA
    mailbox = Mailbox()
    port = smtp_server(mailbox, tls_context=server_tls, require_starttls=True)
    # When the CA bundle is configured, the mail is delivered over TLS
    assert channel(port, tls="starttls", ca_file=ca_file).send(note()).status_code == 250
    assert len(mailbox.messages) == 1
    # When it is not, the certificate is not trusted: transient (SPEC: TLS errors), and the error says why
    with pytest.raises(TransientError, match="certificate verification failed") as failure:
        channel(port, tls="starttls").send(note())
    assert "CERTCTL_SMTP_CA_FILE" in str(failure.value)
    assert len(mailbox.messages) == 1


def test_implicit_tls_delivers(smtp_server, server_tls, ca_file):
    # Given a relay that speaks TLS from the first byte (port 465 style)
    mailbox = Mailbox()
    port = smtp_server(mailbox, ssl_context=server_tls)
    # When a notification is sent with tls=implicit
    sent = channel(port, tls="implicit", ca_file=ca_file).send(note())
    # Then it is delivered
    assert sent.status_code == 250 and len(mailbox.messages) == 1


def authenticator(server, session, envelope, mechanism, auth_data):
    # handled=False: aiosmtpd then sends the 235/535 reply itself.
    right = (auth_data.login, auth_data.password) == (b"alerts", PASSWORD.encode())
    return AuthResult(success=right, handled=False)


@pytest.mark.parametrize("tls", [
    # aiosmtpd warns when it is configured to accept AUTH without TLS, which is exactly this case.
    pytest.param("none", marks=pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")),
    "starttls",
])
def test_auth_with_the_right_password_delivers_and_a_wrong_one_is_permanent(
    smtp_server, server_tls, ca_file, tls
):
    # Given a relay that requires AUTH (over plain text on a trusted network, or after STARTTLS)
    mailbox = Mailbox()
    tls_kwargs = {"tls_context": server_tls} if tls == "starttls" else {"auth_require_tls": False}
    port = smtp_server(mailbox, authenticator=authenticator, auth_required=True, **tls_kwargs)
    opt_in = {"allow_plaintext_auth": True} if tls == "none" else {}  # CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH
    # When the right credentials are configured, the mail is delivered
    ok = channel(port, tls=tls, ca_file=ca_file, username="alerts", password=PASSWORD, **opt_in)
    assert ok.send(note()).status_code == 250
    # When the password is wrong, the error is permanent (535), and never shows the password
    wrong = "wrong-" + PASSWORD
    with pytest.raises(PermanentError) as failure:
        channel(port, tls=tls, ca_file=ca_file, username="alerts", password=wrong, **opt_in).send(note())
    assert failure.value.status_code == 535
    assert wrong not in str(failure.value) and PASSWORD not in str(failure.value)
    assert len(mailbox.messages) == 1



@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_auth_over_a_plain_connection_is_refused_without_the_opt_in(smtp_server):
    # Given a plain relay that offers AUTH without TLS and records every login attempt
    logins = []

    def recording(server, session, envelope, mechanism, auth_data):
        logins.append(auth_data.login)
        return authenticator(server, session, envelope, mechanism, auth_data)

    mailbox = Mailbox()
    port = smtp_server(mailbox, authenticator=recording, auth_required=True, auth_require_tls=False)
    # When credentials are configured for tls=none without the opt-in (settings built in code)
    with pytest.raises(PermanentError, match="CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH") as failure:
        channel(port, username="alerts", password=PASSWORD).send(note())
    # Then the password never went over the wire, and the error does not show it either
    assert logins == [] and mailbox.messages == []
    assert PASSWORD not in str(failure.value)

@pytest.mark.parametrize("stage", ["rcpt", "data"])
@pytest.mark.parametrize(("reply", "error"), [("451 4.3.0 try later", TransientError),
                                              ("550 5.1.1 no such user", PermanentError)])
def test_4xx_replies_are_transient_and_5xx_permanent(smtp_server, stage, reply, error):
    # Given a relay that answers RCPT or DATA with a 4xx or 5xx
    mailbox = Mailbox(**{stage: reply})
    port = smtp_server(mailbox)
    # When a notification is sent, the error class and code follow the reply, with the relay's text
    with pytest.raises(error) as failure:
        channel(port).send(note())
    assert failure.value.status_code == int(reply[:3])
    assert reply in str(failure.value)
    assert mailbox.messages == []


def test_a_relay_that_never_answers_is_transient_after_the_timeout():
    # Given a peer that accepts the connection and never sends its greeting
    stop = threading.Event()
    peer = RawPeer(lambda conn: stop.wait(10)).start()
    try:
        # When a notification is sent with a 0.5 s timeout
        started = time.monotonic()
        with pytest.raises(TransientError, match=r"no answer from 127.0.0.1:\d+ within 0.5 s"):
            channel(peer.port, timeout_seconds=0.5).send(note())
        # Then the worker is free again quickly
        assert time.monotonic() - started < 3
    finally:
        stop.set()
        peer.stop()


def test_a_relay_that_is_down_is_transient():
    # Given a port nothing listens on (the relay is down or restarting)
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    # When a notification is sent, then it is a failure to retry later, naming the relay
    with pytest.raises(TransientError, match=rf"cannot reach 127.0.0.1:{port}: ConnectionRefusedError"):
        channel(port).send(note())


@pytest.mark.parametrize("field", ["recipient", "subject"])
def test_header_injection_is_refused_before_connecting(field):
    # Given a relay that counts connections
    peer = RawPeer(lambda conn: conn.sendall(b"554 no\r\n")).start()
    try:
        # When the recipient or subject smuggles a Bcc header
        hostile = {"recipient": "ops@example.com\r\nBcc: x@evil.example",
                   "subject": "Expiring\r\nBcc: x@evil"}
        with pytest.raises(PermanentError, match="line break"):
            channel(peer.port).send(note(**{field: hostile[field]}))
        # Then nothing reached the relay
        assert peer.connections == 0
    finally:
        peer.stop()


@pytest.mark.parametrize("recipient", ["ops@example.com, boss@example.com", "not an address", "", "a@"])
def test_a_recipient_that_is_not_one_address_is_permanent(recipient):
    # When the recipient is a list, garbage or empty, the mail is refused without a connection
    with pytest.raises(PermanentError, match="e-mail address"):
        channel(1).send(note(recipient=recipient))


def test_a_relay_hanging_up_after_accepting_data_still_counts_as_delivered(smtp_server):
    # Given a relay that accepts the message (250 to DATA) and then drops the connection before QUIT
    mailbox = Mailbox(hang_up_after_data=True)
    port = smtp_server(mailbox)
    # When a notification is sent
    sent = channel(port).send(note())
    # Then it is reported delivered — it was — so it is never sent twice
    assert sent.status_code == 250 and "QUIT failed" in sent.detail
    assert len(mailbox.messages) == 1
