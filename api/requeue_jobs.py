"""Bulk requeue: start by filter (or dry-run it), follow a job's progress, cancel it."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api import params
from api.auth import require
from api.deps import actor, deps
from api.errors import ApiError
from certctl_notify import bulk, store
from certctl_notify.audit import record_audit
from certctl_notify.errors import JobConflict
from certctl_notify.model import AlertType, Channel, utcnow
from certctl_notify.store.listing import NotificationFilter

bp = Blueprint("requeue_jobs", __name__, url_prefix="/api/v1")
bp.url_value_preprocessor(params.no_nul_in_path)

#: Most ids one bulk requeue may name explicitly.
MAX_IDS = 1000
_FIELDS = {"status", "channel", "type", "certificate_id", "q", "created_after", "created_before", "ids", "dry_run"}


def _filter(body: dict) -> NotificationFilter:
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise ApiError(422, "invalid_field", f"unknown field {unknown[0]!r}")
    statuses = body.get("status", "dead")
    statuses = [statuses] if isinstance(statuses, str) else statuses
    if not isinstance(statuses, list) or not statuses or any(s not in ("dead", "failed") for s in statuses):
        raise ApiError(422, "invalid_field", "status must be 'dead', 'failed' or a list of them")
    ids = body.get("ids", [])
    if not isinstance(ids, list) or len(ids) > MAX_IDS or not all(isinstance(i, str) and "\x00" not in i for i in ids):
        raise ApiError(422, "invalid_field", f"ids must be a list of at most {MAX_IDS} notification ids")
    if not isinstance(body.get("dry_run", False), bool):
        raise ApiError(422, "invalid_field", "dry_run must be true or false")
    return NotificationFilter(
        statuses=tuple(dict.fromkeys(statuses)),
        channel=params.choice("channel", body.get("channel"), Channel, status=422),
        type=params.choice("type", body.get("type"), AlertType, status=422),
        certificate_id=params.text("certificate_id", body.get("certificate_id"), status=422),
        q=params.text("q", body.get("q"), status=422),
        created_after=params.timestamp("created_after", body.get("created_after"), status=422),
        created_before=params.timestamp("created_before", body.get("created_before"), status=422),
        ids=tuple(ids),
    )


def _job(row) -> dict:
    return {
        "id": row.id, "status": row.status, "matched": row.matched, "requeued": row.requeued,
        "skipped": row.skipped, "rate_per_second": row.rate_per_second, "filter": row.filter, "actor": row.actor,
        "created_at": row.created_at.isoformat(), "updated_at": row.updated_at.isoformat(),
        "finished_at": row.finished_at.isoformat() if row.finished_at else None,
    }


@bp.post("/notifications/requeue")
@require("admin")
def start():
    """Requeue every dead (or failed) row a filter matches, at ``CERTCTL_REQUEUE_RATE`` rows/s.

    Request: ``POST /api/v1/notifications/requeue`` ``{"status": "dead", "channel": "Slack", "dry_run": true}``
    Response 200 (dry run): ``{"dry_run": true, "matched": 2000}``
    Response 202: ``{"job_id": "job_…", "status": "running", "matched": 2000, "rate_per_second": 100.0}``;
    409 while another bulk requeue runs.
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    f = _filter(body)
    if body.get("dry_run"):
        return jsonify(dry_run=True, matched=bulk.count(deps().sessions, f))
    rate = deps().settings.api.requeue_rate
    try:
        job = bulk.start(deps().sessions, deps().dispatcher, f, rate=rate, actor=actor())
    except JobConflict as exc:
        raise ApiError(409, "job_running", str(exc)) from None
    return jsonify(job_id=job.id, status=job.status, matched=job.matched, rate_per_second=job.rate_per_second), 202


@bp.get("/requeue-jobs/<job_id>")
@require("read")
def show(job_id: str):
    """A bulk requeue's progress.

    Response 200: ``{"id": "job_…", "status": "running", "matched": 2000, "requeued": 700, "skipped": 3, …}``
    """
    with deps().sessions.begin() as session:
        row = store.get_job(session, job_id)
    if row is None:
        raise ApiError(404, "not_found", f"requeue job {job_id} does not exist")
    return jsonify(_job(row))


@bp.post("/requeue-jobs/<job_id>/cancel")
@require("admin")
def cancel(job_id: str):
    """Stop a running bulk requeue; rows already requeued stay requeued.

    Response 200: ``{"id": "job_…", "status": "cancelled", …}``; 404 unknown; 409 not running.
    """
    moment = utcnow()
    with deps().sessions.begin() as session:
        row = store.cancel_job(session, job_id, now=moment)
        current = store.get_job(session, job_id) if row is None else row
        if row is not None:
            record_audit(session, actor(), "cancel_requeue_job", job_id, moment)
    if current is None:
        raise ApiError(404, "not_found", f"requeue job {job_id} does not exist")
    if row is None:
        raise ApiError(409, "wrong_state", f"requeue job {job_id} is {current.status}, not running")
    return jsonify(_job(row))
