"""Bearer-key authentication with ``read`` and ``admin`` scopes, keys compared in constant time."""

from __future__ import annotations

import functools
import hmac

from flask import g, request

from api.deps import deps
from api.errors import ApiError

_RANK = {"read": 1, "admin": 2}


def _key_for(token: str):
    found = None
    for key in deps().settings.api.keys:
        # compare against every key so the time taken does not say which one matched
        if hmac.compare_digest(key.key.encode(), token.encode()):
            found = key
    return found


def require(scope: str):
    """Decorator: the request needs a key of at least ``scope``; sets ``g.actor`` to the key's name."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            settings = deps().settings
            if not settings.api.auth_enabled:
                g.actor = "anonymous"
                return view(*args, **kwargs)
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            key = _key_for(token.strip()) if scheme.lower() == "bearer" and token.strip() else None
            if key is None:
                raise ApiError(401, "unauthorized", "a valid 'Authorization: Bearer <key>' header is required")
            if _RANK[key.scope] < _RANK[scope]:
                raise ApiError(403, "forbidden", f"this action needs an {scope} key; '{key.name}' is {key.scope}")
            g.actor = key.name
            return view(*args, **kwargs)

        return wrapped

    return decorator
