"""The operator console: server-rendered pages at /console, served by the API process.

Pages read through the same store functions as the API; every action the page offers is a call of the
API's own endpoints from ``static/console.js`` (with the session's CSRF token), so the console can do
nothing a key could not do with curl.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from flask import Blueprint, Flask, redirect, request, url_for

#: How long a browser may keep the console's CSS and JS: their URLs carry a digest of their content.
STATIC_MAX_AGE_SECONDS = 365 * 24 * 3600


class _ConsoleBlueprint(Blueprint):
    def get_send_file_max_age(self, filename: str | None) -> int:
        """Static files are cached for good: a changed file gets a new URL (see `static_digests`)."""
        return STATIC_MAX_AGE_SECONDS


bp = _ConsoleBlueprint("console", __name__, url_prefix="/console", template_folder="templates",
                       static_folder="static")


def static_digests() -> dict[str, str]:
    """A short digest of each static file, put in its URL so a new release is fetched at once."""
    folder = Path(bp.static_folder)
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:12] for p in folder.iterdir() if p.is_file()}

#: No inline script or style anywhere; the console loads only its own files.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def init_app(app: Flask) -> None:
    """Register the console's pages, ``/`` → the console, and the security headers of every response."""
    from api.console import access, pages, signin, templating  # noqa: F401 — each adds its routes to bp

    templating.init_app(app, static_digests())
    app.register_blueprint(bp)
    app.add_url_rule("/", "root", lambda: redirect(url_for("console.overview")))

    @app.after_request
    def _security_headers(response):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if request.blueprint == "console" and request.endpoint != "console.static":
            response.headers.setdefault("Cache-Control", "no-store")
        return response
