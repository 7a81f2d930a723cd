"""Who may see a console page: signed in (or auth off, or a bearer header), and admin for the audit log.

Pages answer a visitor who is not signed in with a redirect to the sign-in page; the fragments that
the page's script fetches answer 401, so the script can say the session ended instead of swapping a
sign-in form into a table.
"""

from __future__ import annotations

import functools
import logging

from flask import g, redirect, render_template, request, url_for
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from api.auth import current_viewer
from api.console import bp
from api.errors import ApiError, envelope
from certctl_notify.db import is_unavailable

log = logging.getLogger("certctl_notify.api")

#: Request header the console's script sends when it wants only a page's live region.
FRAGMENT_HEADER = "X-Console-Fragment"


def is_fragment() -> bool:
    return request.headers.get(FRAGMENT_HEADER) is not None


def page(scope: str = "read"):
    """Decorator for console views: sets ``g.viewer``; sends a stranger to sign in."""

    def decorator(view):
        @functools.wraps(view)
        def wrapped(*args, **kwargs):
            viewer = current_viewer()
            if viewer is None:
                if is_fragment():
                    raise ApiError(401, "unauthorized", "the console session has ended; sign in again")
                return redirect(url_for("console.sign_in", next=request.full_path.rstrip("?")))
            g.viewer = viewer  # set first: a refusal page still shows who is signed in, and Sign out
            g.actor = viewer.name
            if scope == "admin" and not viewer.is_admin:
                raise ApiError(403, "forbidden", f"this page needs an admin key; '{viewer.name}' is {viewer.scope}")
            return view(*args, **kwargs)

        return wrapped

    return decorator


@bp.errorhandler(ApiError)
def _error_page(exc: ApiError):
    """A refused or bad console request: a page saying why (the fragment script gets the JSON envelope)."""
    if is_fragment():
        return envelope(exc.status, exc.code, exc.message)
    return render_template("console/error.html", status=exc.status, message=exc.message), exc.status


@bp.errorhandler(DBAPIError)
@bp.errorhandler(PoolTimeout)
def _database_page(exc: Exception):
    """The database is down: say so on the page (503) instead of a JSON body; any other error is a 500."""
    if is_unavailable(exc):
        log.warning("console: database unavailable in %s %s: %s", request.method, request.path,
                    str(exc).splitlines()[0])
        return _error_page(ApiError(503, "database_unavailable",
                                    "the database cannot be reached; this page will work again when it is back"))
    log.exception("console: database error in %s %s", request.method, request.path)
    return _error_page(ApiError(500, "internal_error", "the server failed to handle this request; see its log"))
