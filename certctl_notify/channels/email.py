"""Email: one plain-text message per notification over SMTP (STARTTLS, implicit TLS or a plain relay).

The standard library is enough: ``smtplib`` speaks STARTTLS, implicit TLS, AUTH and timeouts, and
``email.message.EmailMessage`` builds a correct MIME message (RFC 2047 subjects), so no extra dependency.
"""

from __future__ import annotations

import hashlib
import re
import smtplib
import ssl
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime

from certctl_notify.channels.base import Notification, Sent
from certctl_notify.errors import DeliveryError, PermanentError, TransientError
from certctl_notify.redact import redact
from certctl_notify.settings import Settings

#: SMTP's line length limit and no 8-bit bodies: any relay accepts the message (RFC 2047 headers, QP body).
POLICY = policy.SMTP.clone(cte_type="7bit")
_CONTROL = re.compile(r"[\r\n\0]")
_DOT_ATOM = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")


def single_address(value: str, field: str) -> tuple[str, str]:
    """``(addr_spec, domain)`` of the one address in ``value``; PermanentError for anything else."""
    if _CONTROL.search(value):
        raise PermanentError(f"refused: {field} contains a line break or NUL (header injection)")
    try:
        header = POLICY.header_factory(field, value)
        addresses = header.addresses
    except Exception as exc:  # the header parser raises IndexError, ValueError… on garbage
        raise PermanentError(f"refused: {field} {value!r} is not an e-mail address") from exc
    if len(addresses) != 1 or header.defects or not addresses[0].username or not addresses[0].domain:
        raise PermanentError(f"refused: {field} {value!r} is not exactly one e-mail address")
    return addresses[0].addr_spec, addresses[0].domain


def _reply(code: int, text: bytes | str, what: str) -> DeliveryError:
    """4xx (and codes smtplib could not parse) are transient, 5xx permanent."""
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    text = "".join(c if c.isprintable() else " " for c in text)[:300].strip()
    error = PermanentError if 500 <= code < 600 else TransientError
    return error(f"{what}: SMTP {code} {text}".rstrip(), status_code=code)


class EmailChannel:
    """Sends to ``notification.recipient`` through ``CERTCTL_SMTP_HOST``. The Message-ID is derived
    from the notification id, so a resend of the same notification is recognisable downstream."""

    name = "Email"

    def __init__(
        self, host: str, port: int, *, tls: str = "starttls", username: str | None = None,
        password: str | None = None, sender: str = "certctl-notify@localhost", ca_file: str | None = None,
        timeout_seconds: float = 10.0, allow_plaintext_auth: bool = False,
    ):
        self._host, self._port, self._tls = host, port, tls
        self._allow_plaintext_auth = allow_plaintext_auth
        self._credentials = (username, password) if username and password else None
        self._secrets = (password,) if password else ()
        self._sender = sender
        self._ca_file = ca_file
        self._timeout = timeout_seconds

    @classmethod
    def from_settings(cls, settings: Settings, http=None) -> EmailChannel:
        s = settings.smtp
        return cls(s.host, s.port, tls=s.tls, username=s.username, password=s.password, sender=s.sender,
                   ca_file=s.ca_file, timeout_seconds=s.timeout_seconds, allow_plaintext_auth=s.allow_plaintext_auth)

    def compose(self, notification: Notification) -> tuple[EmailMessage, str, str]:
        """Message, envelope sender and recipient; PermanentError for unsafe headers (before connecting)."""
        sender, domain = single_address(self._sender, "From")
        recipient, _ = single_address(notification.recipient, "To")
        if _CONTROL.search(notification.subject):
            raise PermanentError("refused: subject contains a line break or NUL (header injection)")
        local = notification.id if _DOT_ATOM.fullmatch(notification.id) else (
            hashlib.sha256(notification.id.encode()).hexdigest()[:32])
        message = EmailMessage(policy=POLICY)
        message["Message-ID"] = f"<{local}@{domain}>"
        message["Date"] = format_datetime(datetime.now(UTC))
        message["From"] = self._sender
        message["To"] = notification.recipient
        message["Subject"] = notification.subject
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to an alert
        footer = (f"Type: {notification.type}\nCertificate: {notification.certificate_id or '-'}\n"
                  f"Severity: {notification.severity}\nNotification: {notification.id}\n")
        message.set_content(f"{notification.message}\n\n-- \n{footer}")  # also sets MIME-Version
        return message, sender, recipient

    def send(self, notification: Notification) -> Sent:
        """Deliver one message: Sent(250) once the relay accepted DATA.

        Raises:
            PermanentError: unsafe or invalid headers (nothing is sent), AUTH over a plain connection
                without the opt-in (nothing is sent), 5xx replies, a relay lacking STARTTLS/AUTH/SMTPUTF8,
                an unloadable CA bundle.
            TransientError: 4xx replies, timeouts, refused or lost connections, TLS failures.
        """
        message, sender, recipient = self.compose(notification)
        peer = f"{self._host}:{self._port}"
        if self._credentials and self._tls == "none" and not self._allow_plaintext_auth:
            # load_settings refuses this too; settings built in code must not leak the password either.
            raise PermanentError(f"refused: AUTH to {peer} without TLS would send the password in clear; "
                                 "use starttls or implicit, or set CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH=true")
        connect, extra = ((smtplib.SMTP_SSL, {"context": self._context()}) if self._tls == "implicit"
                          else (smtplib.SMTP, {}))
        smtp = None
        try:
            try:
                # The host given here is the name TLS verifies; one timeout bounds the connect and each I/O.
                smtp = connect(self._host, self._port, timeout=self._timeout, **extra)
                if self._tls == "starttls":
                    smtp.starttls(context=self._context())
                if self._credentials:
                    smtp.login(*self._credentials)
                smtp.send_message(message, from_addr=sender, to_addrs=[recipient])
            except OSError as exc:  # smtplib's and ssl's errors are OSErrors too
                error = self._classify(exc, peer)  # the relay may echo what we sent: redact the password
                raise type(error)(redact(str(error), self._secrets), status_code=error.status_code) from exc
            try:
                smtp.quit()
            except OSError as exc:
                # DATA got its 250, so the relay owns the mail: reporting this as a failure would
                # resend a delivered message (the old service's bug: QUIT before the end of DATA).
                return Sent(status_code=250, detail=f"accepted by {peer}; QUIT failed ({type(exc).__name__})")
            return Sent(status_code=250, detail=f"accepted by {peer}")
        finally:
            if smtp is not None:
                smtp.close()

    def _context(self) -> ssl.SSLContext:
        # Built per send: a rotated CA bundle is picked up without restarting the worker.
        try:
            return ssl.create_default_context(cafile=self._ca_file)
        except (OSError, ValueError) as exc:
            raise PermanentError(f"CERTCTL_SMTP_CA_FILE {self._ca_file!r} cannot be loaded: {exc}") from exc

    def _classify(self, exc: OSError, peer: str) -> DeliveryError:
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            code, text = next(iter(exc.recipients.values()))
            return _reply(code, text, f"recipient refused by {peer}")
        if isinstance(exc, smtplib.SMTPResponseException):  # sender, DATA, AUTH (535), HELO, STARTTLS
            return _reply(exc.smtp_code, exc.smtp_error, f"{type(exc).__name__} from {peer}")
        if isinstance(exc, ssl.SSLCertVerificationError):
            return TransientError(f"TLS certificate verification failed for {peer}: {exc.verify_message}; "
                                  "trust its CA with CERTCTL_SMTP_CA_FILE")
        if isinstance(exc, ssl.SSLError):
            return TransientError(f"TLS with {peer} failed: {exc.reason or exc}")
        if isinstance(exc, TimeoutError) or isinstance(exc.__context__, TimeoutError):
            return TransientError(f"no answer from {peer} within {self._timeout:g} s")
        if isinstance(exc, smtplib.SMTPServerDisconnected):
            return TransientError(f"{peer} closed the connection: {exc}")
        if isinstance(exc, smtplib.SMTPException):  # no STARTTLS, no AUTH, no SMTPUTF8: retrying won't add it
            return PermanentError(f"{peer} cannot take this message: {exc}")
        return TransientError(f"cannot reach {peer}: {type(exc).__name__}: {exc}")
