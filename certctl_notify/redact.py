"""Keeping secrets out of errors, logs and the API."""

from __future__ import annotations

import re
from collections.abc import Iterable

_URL = re.compile(r"(https?://)([^/\s?#]+)[^\s]*", re.IGNORECASE)
_USERINFO = re.compile(r"^[^@]*@")


def safe_url(url: str) -> str:
    """``https://hooks.example/T0/B1/secret?x=1`` → ``https://hooks.example/…``: paths and queries
    of webhook URLs often carry the token, so only scheme and host are ever shown."""
    match = _URL.match(url)
    if not match:
        return "[url]"
    return f"{match.group(1)}{_USERINFO.sub('', match.group(2))}/…"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace each secret and every URL's path, query and credentials in ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return _URL.sub(lambda m: safe_url(m.group(0)), text)
