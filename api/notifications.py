"""Notification endpoints under /api/v1/notifications."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from api import params, serialize
from api.auth import require
from api.deps import actor, deps
from api.errors import ApiError
from certctl_notify import intake, operations, store
from certctl_notify.errors import NotFound, ValidationError, WrongState
from certctl_notify.model import AlertType, Channel, Status, utcnow
from certctl_notify.store.listing import NotificationFilter

bp = Blueprint("notifications", __name__, url_prefix="/api/v1/notifications")
bp.url_value_preprocessor(params.no_nul_in_path)


def _max_attempts() -> int:
    return deps().settings.retry.max_attempts


def _not_found_or_conflict(call, *args, **kwargs):
    try:
        return call(*args, **kwargs)
    except NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except WrongState as exc:
        raise ApiError(409, "wrong_state", str(exc)) from None


@bp.get("")
@require("read")
def list_notifications():
    """A filtered page, newest first, with the filtered total.

    Request: ``GET /api/v1/notifications?status=dead&channel=Webhook&page=1&per_page=50``
    Response 200: ``{"data": [...], "total": 1234, "total_exact": true, "page": 1, "per_page": 50,
    "as_of": "2026-…", "next_cursor": "MjAy…"}``.
    Pass ``as_of`` back on later pages to page through a stable set while new rows arrive; for deep
    pages pass ``cursor=<next_cursor>`` instead of ``page`` (each page then costs what the first does).
    ``total`` is exact unless ``total_exact`` is false: then more than that many rows match.
    """
    page, per_page = params.page()
    cursor = params.text("cursor", request.args.get("cursor"))
    if cursor is not None and page != 1:
        raise ApiError(400, "bad_parameter", "pass cursor or page, not both")
    as_of = params.timestamp("as_of", request.args.get("as_of")) or utcnow()
    status = params.choice("status", request.args.get("status"), Status)
    f = NotificationFilter(
        statuses=(status,) if status else (),
        channel=params.choice("channel", request.args.get("channel"), Channel),
        type=params.choice("type", request.args.get("type"), AlertType),
        certificate_id=params.text("certificate_id", request.args.get("certificate_id")),
        q=params.text("q", request.args.get("q")),
        as_of=as_of,
    )
    try:
        with deps().sessions.begin() as session:
            found = store.list_notifications(session, f, page=page, per_page=per_page, cursor=cursor)
    except ValueError as exc:
        raise ApiError(400, "bad_parameter", str(exc)) from None
    return jsonify(data=[serialize.notification(r, max_attempts=_max_attempts()) for r in found.rows],
                   total=found.total, total_exact=found.total_exact, page=page, per_page=per_page,
                   as_of=as_of.isoformat().replace("+00:00", "Z"), next_cursor=found.next_cursor)


@bp.post("")
@require("admin")
def create():
    """Enqueue an alert, one row per channel.

    Request: ``POST /api/v1/notifications`` ``{"type": "ExpirationWarning", "channel": "Webhook",
    "message": "cert api.example expires in 7 days", "certificate_id": "mc-api"}``
    Response 202: ``{"data": [{"id": "notif_…", "status": "pending", …}], "created": [true]}``
    """
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ApiError(400, "bad_request", "the body must be a JSON object")
    try:
        results = intake.enqueue_alert(deps().sessions, deps().dispatcher, body, actor=actor())
    except ValidationError as exc:
        raise ApiError(422, "invalid_field", str(exc)) from None
    return jsonify(
        data=[serialize.notification(r.row, max_attempts=_max_attempts()) for r in results],
        created=[r.created for r in results],
    ), 202


@bp.get("/<notification_id>")
@require("read")
def get_one(notification_id: str):
    """One notification with its attempt history.

    Request: ``GET /api/v1/notifications/notif_1f…``
    Response 200: ``{"id": "notif_1f…", "status": "dead", "retry_count": 5, …, "attempts": [{"attempt": 1, …}]}``
    """
    with deps().sessions.begin() as session:
        row = store.get(session, notification_id)
        history = store.list_attempts(session, notification_id) if row is not None else []
    if row is None:
        raise ApiError(404, "not_found", f"notification {notification_id} does not exist")
    data = serialize.notification(row, max_attempts=_max_attempts())
    data["attempts"] = [serialize.attempt(a) for a in history]
    return jsonify(data)


@bp.get("/<notification_id>/attempts")
@require("read")
def attempts(notification_id: str):
    """The attempt history. Response 200: ``{"data": [{"attempt": 1, "outcome": "retry", …}]}``"""
    with deps().sessions.begin() as session:
        if store.get(session, notification_id) is None:
            raise ApiError(404, "not_found", f"notification {notification_id} does not exist")
        history = store.list_attempts(session, notification_id)
    return jsonify(data=[serialize.attempt(a) for a in history])


@bp.post("/<notification_id>/requeue")
@require("admin")
def requeue(notification_id: str):
    """Requeue a dead or failed notification with a fresh attempt budget, dispatched at once.

    Request: ``POST /api/v1/notifications/notif_1f…/requeue``
    Response 200: ``{"status": "requeued", "id": "notif_1f…"}``; 404 unknown id; 409 wrong state.
    """
    _not_found_or_conflict(operations.requeue, deps().sessions, deps().dispatcher, notification_id, actor=actor(),
                           metrics=deps().metrics)
    return jsonify(status="requeued", id=notification_id)


@bp.post("/<notification_id>/read")
@require("admin")
def mark_read(notification_id: str):
    """Acknowledge a sent alert or dismiss a dead letter.

    Request: ``POST /api/v1/notifications/notif_1f…/read``
    Response 200: ``{"status": "marked_as_read", "id": "notif_1f…"}``; 404 unknown; 409 pending/failed/read.
    """
    _not_found_or_conflict(operations.mark_read, deps().sessions, notification_id, actor=actor())
    return jsonify(status="marked_as_read", id=notification_id)
