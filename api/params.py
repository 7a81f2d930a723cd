"""Typed query and body parameters: a bad one is a 400 or 422 naming the field, never a silent default."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import request

from api.errors import ApiError

#: Largest request body accepted, in bytes (larger → 413).
MAX_BODY_BYTES = 1024 * 1024
#: Largest page the list endpoints serve.
MAX_PER_PAGE = 500
#: Largest page number: keeps ``(page - 1) * per_page`` inside PostgreSQL's bigint OFFSET.
MAX_PAGE = 1_000_000_000


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
    return (integer("page", 1, minimum=1, maximum=MAX_PAGE),
            integer("per_page", 50, minimum=1, maximum=MAX_PER_PAGE))


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
        # in UTC: PostgreSQL refuses offsets beyond ±15:59 that Python accepts (up to ±23:59)
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ApiError(status, "bad_parameter" if status == 400 else "invalid_field",
                       f"{name} must be an ISO 8601 timestamp") from None


def text(name: str, value, *, limit: int = 500, status: int = 400) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise ApiError(status, "bad_parameter" if status == 400 else "invalid_field",
                       f"{name} must be a string of at most {limit} characters, without NUL")
    return value


def no_nul_in_path(endpoint, values) -> None:
    """URL value preprocessor: an id with a NUL cannot exist (and PostgreSQL cannot compare it), so 404."""
    for name, value in (values or {}).items():
        if isinstance(value, str) and "\x00" in value:
            raise ApiError(404, "not_found", f"nothing has that {name}: it contains a NUL character")


