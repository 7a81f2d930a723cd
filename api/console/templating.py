"""What every console template may use: the viewer, the CSRF token, and how times, ages and attempts read."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask, g, url_for

from api.console import session as console_session
from certctl_notify.model import Status


def fmt_time(moment: datetime | None, *, zone: bool = True) -> str:
    """``2026-12-03 18:24:44 UTC`` (every time in the console is UTC; ``zone=False`` where a heading says so)."""
    if moment is None:
        return "—"
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" + (" UTC" if zone else ""))


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else ""


def fmt_iso(text: str | None) -> str:
    """An ISO 8601 string (as the inspector reports times) the way `fmt_time` writes times."""
    return fmt_time(datetime.fromisoformat(text)) if text else "—"


def local_input(moment: datetime | None) -> str:
    """The value of a ``datetime-local`` field (the console's fields are UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if moment else ""


def fmt_seconds(seconds: float | None) -> str:
    """A duration as people say it: ``850 ms``, ``42 s``, ``3 min 5 s``, ``2 h 10 min``, ``3 d 4 h``."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    whole = int(seconds)
    for size, unit, small, small_unit in ((86400, "d", 3600, "h"), (3600, "h", 60, "min"), (60, "min", 1, "s")):
        if whole >= size:
            rest = (whole % size) // small
            return f"{whole // size} {unit}" + (f" {rest} {small_unit}" if rest else "")
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def attempt_number(row) -> int:
    """The attempt a row is at: the one running or queued (pending), that delivered it, or the last made."""
    delivered = row.sent_at is not None and row.status in (Status.SENT.value, Status.READ.value)
    return row.retry_count + 1 if row.status == Status.PENDING.value or delivered else row.retry_count


def init_app(app: Flask, digests: dict[str, str]) -> None:
    """Filters and globals of the console's templates; ``digests`` version the static files' URLs."""

    def static_url(filename: str) -> str:
        return url_for("console.static", filename=filename, v=digests.get(filename))

    app.jinja_env.globals.update(static_url=static_url)
    app.jinja_env.filters.update(fmt_time=fmt_time, iso=iso, fmt_seconds=fmt_seconds, local_input=local_input,
                               fmt_iso=fmt_iso)
    app.jinja_env.globals.update(attempt_number=attempt_number)

    @app.context_processor
    def _console_context():
        # only console templates use these; the token is made lazily, so API responses set no cookie
        return {"viewer": g.get("viewer"), "csrf_token": console_session.csrf_token}
