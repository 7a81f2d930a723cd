"""Keeping secrets out of errors, logs and the API."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, unquote, urlsplit

# Any scheme, not only http: database, SMTP and Redis URLs carry passwords too. The scheme starts
# a word and is short, or a long run of letters (a peer's error body) costs quadratic backtracking.
# Quotes and angle brackets end a URL, so one quoted in a JSON or HTML body keeps its delimiter.
_URL = re.compile(r"(?<![a-z0-9+.-])([a-z][a-z0-9+.-]{0,31}://)([^/\s?#\"'<>]*)[^\s\"'<>]*", re.IGNORECASE)
# Up to the LAST "@": a password may hold an unencoded "@" (``user:p@ss@host``).
_USERINFO = re.compile(r"^.*@")


def safe_url(url: str) -> str:
    """``https://hooks.example/T0/B1/secret?x=1`` → ``https://hooks.example/…``: paths and queries
    of webhook URLs often carry the token, so only scheme and host are ever shown."""
    match = _URL.match(url.strip())
    if not match:
        return "[url]"
    return f"{match.group(1)}{_USERINFO.sub('', match.group(2))}/…"


def url_secrets(url: str | None) -> tuple[str, ...]:
    """The parts of ``url`` that may be a token, for `redact`: a peer often echoes only the path
    or one query value back (``no hook /T0/B1/secret``), never the whole URL."""
    if not url:
        return ()
    parts = urlsplit(url)
    pieces = [url, parts.path, parts.query, parts.password or ""]
    pieces += parts.path.split("/")  # over-redacting a word beats leaving a token segment visible
    pieces += [value for _name, value in parse_qsl(parts.query, keep_blank_values=True)]
    return tuple(dict.fromkeys(p for q in pieces for p in (q, unquote(q)) if p))


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace each secret and every URL's path, query and credentials in ``text``."""
    # Longest first: replacing a short secret inside a longer one would leave the rest visible.
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, "[redacted]")
    return _URL.sub(lambda m: safe_url(m.group(0)), text)
