"""Signing in to the console with an API key, and out again."""

from __future__ import annotations

import logging

from flask import redirect, render_template, request, url_for

from api.auth import key_for
from api.console import bp
from api.console import session as console_session
from api.deps import deps
from api.errors import ApiError

log = logging.getLogger("certctl_notify.api")


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only, never another site (no open redirect)."""
    if target and target.startswith("/console") and not target.startswith("//") and "\\" not in target:
        return target
    return url_for("console.overview")


@bp.get("/sign-in")
def sign_in():
    """The sign-in form (straight to the console when auth is off)."""
    if not deps().settings.api.auth_enabled:
        return redirect(_safe_next(request.args.get("next")))
    return render_template("console/signin.html", next=_safe_next(request.args.get("next")), error=None)


@bp.post("/sign-in")
def sign_in_submit():
    """Check the key, start a session for it; a wrong key changes nothing and says so."""
    target = _safe_next(request.form.get("next"))
    if not deps().settings.api.auth_enabled:
        return redirect(target)
    if not console_session.csrf_ok():
        raise ApiError(403, "csrf_failed", "the sign-in form expired; reload the page and try again")
    key = key_for(request.form.get("key", "").strip())
    if key is None:
        log.warning("console sign-in refused: unknown key (from %s)", request.remote_addr)
        return render_template("console/signin.html", next=target, error="That key is not a valid API key."), 401
    console_session.sign_in(key)
    log.info("console sign-in: %s (%s)", key.name, key.scope)
    return redirect(target)


@bp.post("/sign-out")
def sign_out():
    """End this browser's session (the form carries the CSRF token, so no other site can sign you out)."""
    if console_session.csrf_ok():
        console_session.sign_out()
    return redirect(url_for("console.sign_in"))
