"""Notification endpoints under /api/v1/notifications."""

from __future__ import annotations

from flask import Blueprint, current_app, g, jsonify, request

from api import serialize
from api.auth import require
from api.errors import ApiError
from certctl_notify import client, store
from certctl_notify.errors import ValidationError

bp = Blueprint("notifications", __name__, url_prefix="/api/v1/notifications")


def _deps():
    return current_app.extensions["certctl"]


def _max_attempts() -> int:
    return current_app.config["CERTCTL"].retry.max_attempts


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
        results = client.enqueue_alert(_deps().sessions, _deps().dispatcher, body)
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
    with _deps().sessions.begin() as session:
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
    with _deps().sessions.begin() as session:
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
    try:
        client.requeue(_deps().sessions, _deps().dispatcher, notification_id, actor=g.actor)
    except client.NotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except client.WrongState as exc:
        raise ApiError(409, "wrong_state", str(exc)) from None
    return jsonify(status="requeued", id=notification_id)
