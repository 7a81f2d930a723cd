"""What every console template may use: the viewer, the CSRF token, and how times, ages and attempts read
(`certctl_notify.display`, shared with the command line)."""

from __future__ import annotations

from datetime import UTC, datetime

from flask import Flask, g, url_for

from api.console import session as console_session
from certctl_notify import display
from certctl_notify.display import fmt_seconds, fmt_time


def iso(moment: datetime | None) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z") if moment else ""


def fmt_iso(text: str | None) -> str:
    """An ISO 8601 string (as the inspector reports times) the way `fmt_time` writes times."""
    return fmt_time(datetime.fromisoformat(text)) if text else "—"


def local_input(moment: datetime | None) -> str:
    """The value of a ``datetime-local`` field (the console's fields are UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if moment else ""


def attempt_number(row) -> int:
    """The attempt a row is at (`certctl_notify.display.attempt_number`, as the command line counts it)."""
    return display.attempt_number(row.status, row.retry_count, row.sent_at)


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
