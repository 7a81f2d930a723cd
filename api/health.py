"""Liveness and readiness, open without a key."""

from __future__ import annotations

from flask import Blueprint, jsonify
from sqlalchemy import text

from api.deps import deps as current_deps

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """The process answers. Response 200: ``{"status": "ok"}``"""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    """The database and the broker answer. Response 200 or 503: ``{"database": "ok", "broker": "ok"}``"""
    deps = current_deps()
    checks = {}
    try:
        with deps.sessions.begin() as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # reported, not raised: this endpoint's job is to say what is down
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        with deps.producer.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return jsonify(status="ready" if ready else "unavailable", **checks), 200 if ready else 503
