"""Who is asking: a bearer key (scripts) or the console's signed session (browsers), with ``read`` and
``admin`` scopes. Keys are compared in constant time; a session's state-changing requests need its CSRF
token, and no state-changing request is accepted from another site's page."""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import Flask, g, request

from api.console import session as console_session
from api.deps import deps
from api.errors import ApiError
from certctl_notify.settings import ApiKey

_RANK = {"read": 1, "admin": 2}


@dataclass(frozen=True)
class Viewer:
    """Whoever makes this request: the key's name and scope (``anonymous`` admin when auth is off)."""

    name: str
    scope: str
    via: str  #: "header", "session" or "open" (CERTCTL_AUTH_TYPE=none)

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"


def key_for(token: str) -> ApiKey | None:
    found = None
    for key in deps().settings.api.keys:
        # compare against every key so the time taken does not say which one matched
        if hmac.compare_digest(key.key.encode(), token.encode()):
            found = key
    return found


def current_viewer() -> Viewer | None:
    """The viewer of this request, or None when it carries no credential at all.

    Raises:
        ApiError 401: an Authorization header that is not a valid bearer key.
        ApiError 403: a console session's state-changing request without the session's CSRF token.
    """
    api = deps().settings.api
    if not api.auth_enabled:
        return Viewer("anonymous", "admin", "open")
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        key = key_for(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
        if key is None:
            raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <key>' header is required")
        return Viewer(key.name, key.scope, "header")
    key = console_session.signed_in_key(api.keys, api.console_session_seconds)
    if key is None:
        return None
    if request.method not in console_session.SAFE_METHODS and not console_session.csrf_ok():
        raise ApiError(403, "csrf_failed", "the request lacks this console session's CSRF token; reload the page")
    return Viewer(key.name, key.scope, "session")


def require(scope: str):
    """Decorator: the request needs a key of at least ``scope``; sets ``g.actor`` to the key's name."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            viewer = current_viewer()
            if viewer is None:
                raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <key>' header is required")
            if _RANK[viewer.scope] < _RANK[scope]:
                raise ApiError(403, "forbidden", f"this action needs an {scope} key; '{viewer.name}' is {viewer.scope}")
            g.actor = viewer.name
            return view(*args, **kwargs)

        return wrapped

    return decorator


def init_app(app: Flask) -> None:
    """Refuse state-changing requests that a page of another origin sent (the browser says so)."""

    @app.before_request
    def _same_origin_only():
        if request.method in console_session.SAFE_METHODS:
            return
        site = request.headers.get("Sec-Fetch-Site")
        origin = request.headers.get("Origin")
        # Scripts and curl send neither header. Only the netloc is compared: behind a TLS-terminating
        # proxy the scheme seen here differs from the browser's.
        foreign_origin = origin is not None and urlsplit(origin).netloc != request.host
        if site not in (None, "same-origin", "none") or foreign_origin:
            raise ApiError(403, "cross_origin", "state-changing requests from another site's page are refused")
