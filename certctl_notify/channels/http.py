"""Outbound HTTP for every HTTP channel: SSRF guard, timeouts, capped reads, outcome classification."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from certctl_notify.config import OutboundSettings
from certctl_notify.errors import PermanentError, TransientError
from certctl_notify.redact import redact, safe_url

#: Redirects followed at most, each re-checked by the SSRF guard.
MAX_REDIRECTS = 3
#: Status codes that mean "try again later"; every other 4xx is permanent.
TRANSIENT_STATUS = frozenset({408, 425, 429})

Resolver = Callable[[str, int], list[str]]


def resolve(host: str, port: int) -> list[str]:
    """All addresses ``host`` resolves to, IPv4 first."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    return sorted(addresses, key=lambda a: ":" in a)


def _forbidden(address: str) -> str | None:
    ip = ipaddress.ip_address(address)
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    for kind in ("loopback", "link_local", "multicast", "unspecified"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    return None


@dataclass(frozen=True)
class Reply:
    status_code: int
    headers: Mapping[str, str]
    body: bytes  #: at most the configured number of bytes


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class OutboundHttp:
    """POSTs to a peer that the SSRF guard accepts, pinned to the address it checked.

    The address is resolved and checked at send time, then connected to directly (Host header and
    TLS SNI keep the name), so a DNS answer that changes between check and connect cannot redirect
    the request to a forbidden address.
    """

    def __init__(self, settings: OutboundSettings, *, resolver: Resolver = resolve):
        self._settings = settings
        self._resolver = resolver
        timeout = settings.timeout_seconds
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)), follow_redirects=False, trust_env=False
        )

    def close(self) -> None:
        self._client.close()

    def _pinned(self, url: httpx.URL) -> tuple[httpx.URL, dict]:
        if url.scheme not in ("http", "https") or not url.host:
            raise PermanentError(f"refused: {safe_url(str(url))} is not an http(s) URL")
        port = url.port or (443 if url.scheme == "https" else 80)
        try:
            addresses = self._resolver(url.host, port)
        except OSError as exc:
            raise TransientError(f"DNS lookup of {url.host} failed: {exc}") from exc
        for address in addresses:
            reason = _forbidden(address)
            if reason is None or self._settings.allows(url.host, address):
                host = f"[{address}]" if ":" in address else address
                extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
                return url.copy_with(host=host.strip("[]")), {"host": url.netloc.decode(), "ext": extensions}
        raise PermanentError(
            f"refused: {url.host} resolves to {addresses[0] if addresses else 'nothing'} "
            f"({_forbidden(addresses[0]) if addresses else 'no address'}); "
            "allow it with CERTCTL_OUTBOUND_ALLOW if this is intended"
        )

    def post(self, url: str, *, content: bytes, headers: Mapping[str, str], secrets=()) -> Reply:
        """POST once (following at most `MAX_REDIRECTS` method-preserving redirects).

        Raises:
            TransientError: timeouts, connection and TLS errors.
            PermanentError: a refused address, a non-http URL, a redirect that is not 307/308.
        """
        target = httpx.URL(url)
        for _hop in range(MAX_REDIRECTS + 1):
            pinned, meta = self._pinned(target)
            request = self._client.build_request(
                "POST", pinned, content=content, headers={**headers, "Host": meta["host"]}, extensions=meta["ext"]
            )
            try:
                response = self._client.send(request, stream=True)
            except httpx.TimeoutException as exc:
                raise TransientError(f"timed out talking to {target.host} ({type(exc).__name__})") from exc
            except httpx.TransportError as exc:
                message = redact(f"{type(exc).__name__} talking to {target.host}: {exc}", secrets)
                raise TransientError(message) from exc
            try:
                body = self._read_capped(response)
            finally:
                response.close()
            if response.status_code in (307, 308) and "location" in response.headers:
                target = target.join(response.headers["location"])
                continue
            if 300 <= response.status_code < 400:
                raise PermanentError(
                    f"HTTP {response.status_code} redirect from {target.host} not followed", status_code=response.status_code
                )
            return Reply(response.status_code, response.headers, body)
        raise PermanentError(f"more than {MAX_REDIRECTS} redirects from {url and safe_url(url)}")

    def _read_capped(self, response: httpx.Response) -> bytes:
        limit = self._settings.max_response_bytes
        chunks, size = [], 0
        try:
            for chunk in response.iter_bytes():
                chunks.append(chunk[: limit - size])
                size += len(chunks[-1])
                if size >= limit:
                    break
        except httpx.HTTPError:
            pass  # a body cut short does not change the status the peer already sent
        return b"".join(chunks)


def classify(reply: Reply, *, peer: str, secrets=()) -> None:
    """Return when ``reply`` is a 2xx; otherwise raise the error the status calls for."""
    code = reply.status_code
    if 200 <= code < 300:
        return
    snippet = redact(reply.body[:300].decode("utf-8", "replace").strip(), secrets)
    message = f"HTTP {code} from {peer}" + (f": {snippet}" if snippet else "")
    if code in TRANSIENT_STATUS or code >= 500:
        raise TransientError(
            message, status_code=code, retry_after=retry_after_seconds(reply.headers.get("retry-after"))
        )
    raise PermanentError(message, status_code=code)
