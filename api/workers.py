"""The Workers view under /api/v1/workers: Flower-style worker and queue state, or "unavailable"."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api import inspector
from api.auth import require
from api.deps import deps

bp = Blueprint("workers", __name__, url_prefix="/api/v1")


@bp.get("/workers")
@require("read")
def workers():
    """Workers online with their pool, processed count and tasks, and the queue depths.

    Request: ``GET /api/v1/workers``
    Response 200: ``{"status": "ok", "reason": null, "checked_at": "2026-…", "timeout_seconds": 1.0,
    "workers": [{"name": "celery@worker-1", "online": true, "pid": 7, "uptime_seconds": 3600,
    "pool": {"kind": "prefork", "size": 4}, "processed": 1520, "active": [{"task_id": "…",
    "task": "certctl_notify.deliver", "notification_id": "notif_…", "attempt": 2, "runtime_seconds": 1.4,
    "worker_pid": 12}], "reserved": 0, "scheduled": 3}], "queues": {"celery": 0, "certctl.deliver": 12,
    "certctl.control": 0}}``.
    With no worker answering, or the broker down, still 200: ``{"status": "unavailable",
    "reason": "no worker answered within 1 s", "workers": [], …}``.
    """
    found = deps()
    return jsonify(inspector.workers_view(found.producer, timeout=found.settings.monitor.inspect_timeout_seconds))
