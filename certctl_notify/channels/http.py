"""Outbound HTTP for every HTTP channel: SSRF guard, timeouts, capped reads, outcome classification."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from http.cookiejar import CookieJar, DefaultCookiePolicy

import httpx

from certctl_notify.errors import PermanentError, TransientError
from certctl_notify.redact import redact, safe_url
from certctl_notify.settings import OutboundSettings

#: Redirects followed at most, each re-checked by the SSRF guard.
MAX_REDIRECTS = 3
#: Status codes that mean "try again later"; every other 4xx is permanent.
TRANSIENT_STATUS = frozenset({408, 425, 429})
#: Headers that carry no secret and may follow a redirect to another origin (`OutboundHttp.post`).
PORTABLE_HEADERS = ("content-type", "user-agent")

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to, IPv4 first."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    return sorted(addresses, key=lambda a: ":" in a)


def _forbidden(address: str) -> str | None:
    ip = ipaddress.ip_address(address)
    ip = getattr(ip, "ipv4_mapped", None) or ip  # ::ffff:127.0.0.1 reaches 127.0.0.1
    kinds = ("loopback", "link_local", "multicast", "unspecified")
    return next((kind.replace("_", "-") for kind in kinds if getattr(ip, f"is_{kind}")), None)


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port  # httpx leaves the port None when it is the scheme's default


@dataclass(frozen=True)
class Reply:
    status_code: int
    headers: Mapping[str, str]
    body: bytes  #: at most the configured number of bytes


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad."""
    value = (value or "").strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):  # also "" and garbage
        return None
    # A "-0000" zone parses to a naive datetime; HTTP dates are always GMT.
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class OutboundHttp:
    """POSTs to a peer that the SSRF guard accepts, pinned to the address it checked.

    The address is resolved and checked at send time, then connected to directly (Host header and
    TLS SNI keep the name), so a DNS answer that changes between check and connect cannot redirect
    the request to a forbidden address.
    """

    def __init__(
        self, settings: OutboundSettings, *, resolver: Resolver = resolve, tls_context: ssl.SSLContext | None = None,
    ):
        """``tls_context`` replaces httpx's default verifying context (certifi's CAs), e.g. to trust a
        private CA; it is never a way to turn verification off."""
        self._settings = settings
        self._resolver = resolver
        # Requests go to IPs, so a jar would replay one peer's cookies to every name on that IP.
        jar = CookieJar(DefaultCookiePolicy(allowed_domains=[]))
        verify = tls_context if tls_context is not None else True
        self._client = httpx.Client(follow_redirects=False, trust_env=False, cookies=jar, verify=verify)

    def close(self) -> None:
        self._client.close()

    def pinned(self, url: httpx.URL) -> tuple[httpx.URL, dict]:
        """``url`` with its host replaced by the address a send goes to (DNS resolved once, the SSRF
        guard applied), and the request extensions that keep the name for Host and SNI.

        Raises:
            PermanentError: not http(s), an invalid host name, or only refused addresses.
            TransientError: the DNS lookup failed.
        """
        if url.scheme not in ("http", "https") or not url.host:
            raise PermanentError(f"refused: {safe_url(str(url))} is not an http(s) URL")
        try:
            addresses = self._resolver(url.host, url.port or (443 if url.scheme == "https" else 80))
        except UnicodeError as exc:  # unencodable (a label too long…): no retry will fix it
            raise PermanentError(f"refused: {url.host!r} is not a valid host name") from exc
        except OSError as exc:
            raise TransientError(f"DNS lookup of {url.host} failed: {exc}") from exc
        for address in addresses:
            if _forbidden(address) is None or self._settings.allows(url.host, address):
                extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
                return url.copy_with(host=address), {"host": url.netloc.decode(), "ext": extensions}
        first, reason = (addresses[0], _forbidden(addresses[0])) if addresses else ("nothing", "no address")
        raise PermanentError(f"refused: {url.host} resolves to {first} ({reason}); "
                             "allow it with CERTCTL_OUTBOUND_ALLOW if this is intended")

    def post(
        self, url: str, *, content: bytes, headers: Mapping[str, str], secrets=(),
        portable_headers: Collection[str] = PORTABLE_HEADERS,
    ) -> Reply:
        """POST once, following at most `MAX_REDIRECTS` 307/308 redirects, all within ``timeout_seconds``.

        A redirect on the same origin keeps every header. One to another origin (scheme, host or port)
        keeps only ``portable_headers`` (lower-case names) of the caller's: any other header may be a
        credential the new origin must not see. A redirect from https to http is refused.

        Raises:
            TransientError: timeouts, connection and TLS errors.
            PermanentError: a refused address, a non-http or invalid URL, a redirect that is not 307/308
                or that downgrades https to http.
        """
        deadline = time.monotonic() + self._settings.timeout_seconds
        # identity: the cap must bound what we hold in memory, and a gzip body can inflate 1000-fold.
        sending = httpx.Headers(headers)
        sending["accept-encoding"] = "identity"  # replaces a configured one, whatever its case
        keep = {*(name.lower() for name in portable_headers), "accept-encoding"}  # Host is set per hop
        target, location = None, url
        for _hop in range(MAX_REDIRECTS + 1):
            try:
                following = target.join(location) if target is not None else httpx.URL(location)
            except httpx.InvalidURL as exc:
                raise PermanentError(redact(f"refused: invalid URL ({exc})", secrets)) from exc
            if target is not None and target.scheme == "https" and following.scheme == "http":
                raise PermanentError(f"refused a downgrade: {safe_url(str(target))} redirected to plain "
                                     f"{safe_url(str(following))}")
            if target is not None and _origin(following) != _origin(target):
                sending = httpx.Headers([(k, v) for k, v in sending.multi_items() if k in keep])
            target = following
            pinned, meta = self.pinned(target)
            sending["host"] = meta["host"]  # replaces a configured Host, whatever its case
            remaining = max(0.001, deadline - time.monotonic())
            request = self._client.build_request(
                "POST", pinned, content=content, headers=sending, extensions=meta["ext"],
                timeout=httpx.Timeout(remaining, connect=min(remaining, 10.0)),
            )
            try:  # timeouts, refused connections, TLS and protocol errors alike
                response = self._client.send(request, stream=True)
            except httpx.TransportError as exc:
                message = redact(f"{type(exc).__name__} talking to {target.host}: {exc}", secrets)
                raise TransientError(message) from exc
            body = self._read_capped(response, deadline)
            code, location = response.status_code, response.headers.get("location")
            if code in (307, 308) and location:
                continue
            if 300 <= code < 400:  # other redirects would turn the POST into a GET, or loop
                raise PermanentError(f"HTTP {code} redirect from {target.host} refused", status_code=code)
            return Reply(code, response.headers, body)
        raise PermanentError(f"more than {MAX_REDIRECTS} redirects from {safe_url(url)}")

    def _read_capped(self, response: httpx.Response, deadline: float) -> bytes:
        limit, chunks, size = self._settings.max_response_bytes, [], 0
        try:
            for chunk in response.iter_raw():
                chunks.append(chunk[: limit - size])
                size += len(chunks[-1])
                if size >= limit or time.monotonic() > deadline:  # a trickling body must not hold the worker
                    break
        except httpx.HTTPError:
            pass  # a body cut short does not change the status the peer already sent
        finally:
            response.close()
        return b"".join(chunks)


def classify(reply: Reply, *, peer: str, secrets=()) -> None:
    """Return when ``reply`` is a 2xx; otherwise raise the error the status calls for."""
    code = reply.status_code
    if 200 <= code < 300:
        return
    # Redact before cutting (a cut secret would no longer match), and keep only printable text:
    # PostgreSQL refuses NUL in the last_error column.
    text = redact(reply.body.decode("utf-8", "replace"), secrets)[:300]
    snippet = "".join(c if c.isprintable() else " " for c in text).strip()
    message = f"HTTP {code} from {peer}" + (f": {snippet}" if snippet else "")
    if code in TRANSIENT_STATUS or code >= 500:
        raise TransientError(
            message, status_code=code, retry_after=retry_after_seconds(reply.headers.get("retry-after"))
        )
    raise PermanentError(message, status_code=code)
