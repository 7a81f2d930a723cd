"""Counts operators watch, and the audit log of admin actions."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api import params
from api.auth import require
from api.deps import deps
from certctl_notify import store
from certctl_notify.model import utcnow

bp = Blueprint("stats", __name__, url_prefix="/api/v1")


@bp.get("/stats/summary")
@require("read")
def summary():
    """Counts per status, the oldest pending alert's age and the retries due now.

    Response 200: ``{"notifications_pending": 3, "notifications_sent": 120, "notifications_failed": 2,
    "notifications_dead": 1, "notifications_read": 7, "notifications_total": 133,
    "oldest_pending_seconds": 4.2, "retries_due": 0}``
    """
    with deps().sessions.begin() as session:
        data = store.summary(session, now=utcnow())
    counts = {f"notifications_{status}": n for status, n in data["counts"].items()}
    return jsonify(**counts, notifications_total=sum(data["counts"].values()),
                   oldest_pending_seconds=round(data["oldest_pending_seconds"], 3), retries_due=data["retries_due"])


@bp.get("/audit")
@require("admin")
def audit():
    """Admin actions, newest first.

    Response 200: ``{"data": [{"at": "…", "actor": "ops", "action": "requeue", "target": "notif_…",
    "detail": null, "request_id": "…"}], "total": 1, "page": 1, "per_page": 50}``
    """
    page, per_page = params.page()
    with deps().sessions.begin() as session:
        total, rows = store.list_audit(session, page=page, per_page=per_page)
    data = [{"at": r.at.isoformat(), "actor": r.actor, "action": r.action, "target": r.target,
             "detail": r.detail, "request_id": r.request_id} for r in rows]
    return jsonify(data=data, total=total, page=page, per_page=per_page)
