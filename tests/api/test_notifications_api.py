"""The first API endpoints against the real test database and a real Redis broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis

from api.app import create_app
from certctl_notify import store
from certctl_notify.publish import DELIVERY_QUEUE
from tests.api.conftest import ADMIN, READ


def snapshot(sessions, notification_id):
    with sessions.begin() as s:
        return tuple(store.get(s, notification_id))


def queued(broker_url) -> int:
    return redis.Redis.from_url(broker_url).llen(DELIVERY_QUEUE)


def test_requeue_of_a_dead_row_resets_it_and_dispatches_at_once(http, make_row, sessions, broker_url):
    # Given a dead row after a full budget
    row = make_row("dead", retry_count=5, last_error="HTTP 503 from http://x/…")
    # When an admin requeues it
    response = http.post(f"/api/v1/notifications/{row.id}/requeue", headers=ADMIN)
    # Then it is pending with a fresh budget, and its delivery task is already on the broker
    assert response.status_code == 200
    assert response.json == {"status": "requeued", "id": row.id}
    with sessions.begin() as s:
        now = store.get(s, row.id)
    assert (now.status, now.retry_count, now.next_retry_at, now.last_error) == ("pending", 0, None, None)
    assert queued(broker_url) == 1


@pytest.mark.parametrize("status", ["sent", "pending", "read"])
def test_requeue_from_the_wrong_state_is_409_and_changes_nothing(http, make_row, sessions, broker_url, status):
    row = make_row(status, sent_at=datetime.now(UTC) if status in ("sent", "read") else None)
    before = snapshot(sessions, row.id)
    response = http.post(f"/api/v1/notifications/{row.id}/requeue", headers=ADMIN)
    assert response.status_code == 409
    assert response.json["error"] == "wrong_state" and status in response.json["message"]
    assert snapshot(sessions, row.id) == before
    assert queued(broker_url) == 0


def test_requeue_while_an_attempt_holds_its_lease_is_refused(http, make_row, sessions, broker_url):
    # Given a failed row whose retry attempt is being made right now
    row = make_row("failed", retry_count=2, lease_owner="t:3",
                   lease_expires_at=datetime.now(UTC) + timedelta(minutes=2))
    before = snapshot(sessions, row.id)
    response = http.post(f"/api/v1/notifications/{row.id}/requeue", headers=ADMIN)
    # Then requeue waits for it instead of racing it (which could send the alert twice)
    assert response.status_code == 409 and "in progress" in response.json["message"]
    assert snapshot(sessions, row.id) == before


def test_requeue_of_an_unknown_id_is_404_with_the_envelope(http):
    response = http.post("/api/v1/notifications/notif_nope/requeue", headers={**ADMIN, "X-Request-ID": "req-1"})
    assert response.status_code == 404
    assert response.json == {"error": "not_found", "message": "notification notif_nope does not exist",
                             "request_id": "req-1"}
    assert response.headers["X-Request-ID"] == "req-1"


@pytest.mark.parametrize("headers, status", [({}, 401), ({"Authorization": "Bearer wrong"}, 401),
                                             ({"Authorization": "Basic admin-key"}, 401), (READ, 403)])
def test_requeue_needs_an_admin_key(http, make_row, sessions, headers, status):
    row = make_row("dead", retry_count=5)
    before = snapshot(sessions, row.id)
    response = http.post(f"/api/v1/notifications/{row.id}/requeue", headers=headers)
    assert response.status_code == status
    assert set(response.json) == {"error", "message", "request_id"}
    assert snapshot(sessions, row.id) == before


def test_get_one_shows_the_row_and_its_attempts(http, make_row, sessions):
    row = make_row("failed", retry_count=1, last_error="HTTP 503")
    with sessions.begin() as s:
        store.claim(s, row.id, attempt=2, token="t:2", now=datetime.now(UTC), lease_seconds=60, worker="w1",
                    task_id="t")
    body = http.get(f"/api/v1/notifications/{row.id}", headers=READ).json
    assert body["id"] == row.id and body["status"] == "failed" and body["max_attempts"] == 5
    assert [(a["attempt"], a["worker"], a["outcome"]) for a in body["attempts"]] == [(2, "w1", None)]
    assert http.get("/api/v1/notifications/notif_nope", headers=READ).status_code == 404


def test_enqueue_over_http_with_a_dedupe_key_creates_one_row(http, sessions, broker_url):
    alert = {"type": "ExpirationWarning", "channel": "Webhook", "message": "expires in 7 days",
             "dedupe_key": "exp-7-api"}
    first = http.post("/api/v1/notifications", json=alert, headers=ADMIN)
    second = http.post("/api/v1/notifications", json=alert, headers=ADMIN)
    assert first.status_code == second.status_code == 202
    assert first.json["created"] == [True] and second.json["created"] == [False]
    assert first.json["data"][0]["id"] == second.json["data"][0]["id"]
    with sessions.begin() as s:
        assert store.count_by_status(s)["pending"] == 1
    assert queued(broker_url) == 1  # one delivery published, not two


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"type": "ExpirationWarning", "channel": "Fax", "message": "x"}, 422, "channel"),
        ({"type": "ExpirationWarning", "channel": "Webhook", "message": ""}, 422, "message"),
        ("not json", 400, None),
    ],
)
def test_bad_enqueue_input_is_refused_and_writes_nothing(http, sessions, broker_url, body, status, field):
    data = json.dumps(body) if isinstance(body, dict) else body
    response = http.post("/api/v1/notifications", data=data, content_type="application/json", headers=ADMIN)
    assert response.status_code == status
    if field:
        assert field in response.json["message"]
    with sessions.begin() as s:
        assert sum(store.count_by_status(s).values()) == 0
    assert queued(broker_url) == 0


def test_body_over_one_mebibyte_is_413(http, sessions):
    big = json.dumps({"type": "ExpirationWarning", "channel": "Webhook", "message": "x" * (1024 * 1024)})
    response = http.post("/api/v1/notifications", data=big, content_type="application/json", headers=ADMIN)
    assert response.status_code == 413
    assert response.json["error"] == "request_entity_too_large"


def test_unknown_routes_and_methods_get_the_envelope(http):
    assert http.get("/api/v1/nothing").json["error"] == "not_found"
    response = http.delete("/api/v1/notifications/x/requeue", headers=ADMIN)
    assert response.status_code == 405 and response.json["error"] == "method_not_allowed"


def test_health_needs_no_key_and_readiness_checks_database_and_broker(http):
    assert http.get("/healthz").status_code == 200
    ready = http.get("/readyz")
    assert ready.status_code == 200 and ready.json["database"] == "ok" and ready.json["broker"] == "ok"


def test_readiness_reports_a_dead_broker(make_env, sessions):
    from certctl_notify.environment import load_settings

    app = create_app(load_settings(make_env(CERTCTL_BROKER_URL="redis://127.0.0.1:1/0")))
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503 and ready.json["broker"].startswith("unavailable")
