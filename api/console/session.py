"""The console's sign-in: a signed session cookie that names an API key, and its CSRF token.

The cookie (Flask's itsdangerous-signed session) holds a fingerprint of the key, never the key itself;
every request looks the key up again in ``CERTCTL_API_KEYS``, so removing a key signs its sessions out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from flask import current_app, request, session

from certctl_notify.settings import ApiKey, Settings

#: Methods that change nothing, so need no CSRF token.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Where the console's script sends the CSRF token; forms send it as the `CSRF_FIELD` field.
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
COOKIE_NAME = "certctl_console"


def session_secret(settings: Settings) -> bytes:
    """What signs console cookies: ``CERTCTL_CONSOLE_SECRET``, else a digest of the API keys.

    Every API process derives the same secret from the same keys, so any gunicorn worker accepts a
    cookie another issued, and rotating a key rotates the secret.
    """
    if settings.api.console_secret:
        return settings.api.console_secret.encode()
    material = "\0".join(sorted(f"{k.name}:{k.key}:{k.scope}" for k in settings.api.keys))
    if not material:  # no keys: nobody can sign in, so a per-process secret is enough
        return secrets.token_bytes(32)
    return hashlib.sha256(b"certctl-notify console session\0" + material.encode()).digest()


def configure(app, settings: Settings) -> None:
    """Cookie settings for the console session (HttpOnly, SameSite=Strict, lifetime from settings)."""
    app.secret_key = session_secret(settings)
    app.config.update(SESSION_COOKIE_NAME=COOKIE_NAME, SESSION_COOKIE_HTTPONLY=True,
                      SESSION_COOKIE_SAMESITE="Strict", PERMANENT_SESSION_LIFETIME=settings.api.console_session_seconds)


def _fingerprint(key: str) -> str:
    return hmac.new(current_app.secret_key, key.encode(), hashlib.sha256).hexdigest()


def sign_in(key: ApiKey) -> None:
    """Start a fresh session for ``key`` (a new CSRF token too: no token survives a sign-in)."""
    session.clear()
    session.permanent = True
    session["fp"] = _fingerprint(key.key)
    session["at"] = time.time()
    session["csrf"] = secrets.token_urlsafe(32)


def sign_out() -> None:
    session.clear()


def signed_in_key(keys: tuple[ApiKey, ...], max_age: float) -> ApiKey | None:
    """The configured key this session was signed in with, or None (none, expired, or key removed)."""
    fingerprint, at = session.get("fp"), session.get("at")
    if not isinstance(fingerprint, str) or not isinstance(at, int | float) or time.time() - at > max_age:
        return None
    found = None
    for key in keys:  # every key is compared, so the time taken does not say which one matched
        if hmac.compare_digest(_fingerprint(key.key), fingerprint):
            found = key
    return found


def csrf_token() -> str:
    """This session's CSRF token (made on first use, e.g. for the sign-in form)."""
    token = session.get("csrf")
    if not isinstance(token, str):
        token = session["csrf"] = secrets.token_urlsafe(32)
    return token


def csrf_ok() -> bool:
    """Whether this request carries the session's CSRF token (header from script, field from a form)."""
    expected = session.get("csrf")
    given = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
    return isinstance(expected, str) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())
