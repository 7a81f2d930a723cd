"""Typed query and body parameters: a bad one is a 400 or 422 naming the field, never a silent default."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import request

from api.errors import ApiError
from certctl_notify.model import AlertType, Channel, Status

#: Largest page the list endpoints serve.
MAX_PER_PAGE = 500


def integer(name: str, default: int, *, minimum: int, maximum: int | None = None) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_parameter", f"{name} must be a whole number") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ApiError(400, "bad_parameter", f"{name} must be {bound}")
    return value


def page() -> tuple[int, int]:
    return integer("page", 1, minimum=1), integer("per_page", 50, minimum=1, maximum=MAX_PER_PAGE)


def choice(name: str, value, enum_cls, *, status: int = 400) -> str | None:
    if value is None:
        return None
    try:
        return enum_cls(value).value
    except ValueError:
        allowed = ", ".join(m.value for m in enum_cls)
        raise ApiError(status, "bad_parameter" if status == 400 else "invalid_field",
                       f"{name} {value!r} is not one of: {allowed}") from None


def timestamp(name: str, value, *, status: int = 400) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(status, "bad_parameter" if status == 400 else "invalid_field",
                       f"{name} must be an ISO 8601 timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def text(name: str, value, *, limit: int = 500, status: int = 400) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ApiError(status, "bad_parameter" if status == 400 else "invalid_field",
                       f"{name} must be a string of at most {limit} characters")
    return value


def enums():
    return {"status": Status, "channel": Channel, "type": AlertType}
