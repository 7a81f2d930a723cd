"""Bulk requeue of 2,000 dead rows through the API, a real worker and a real receiver."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from api.app import create_app
from certctl_notify import store
from certctl_notify.environment import load_settings
from certctl_notify.model import events
from tests.conftest import wait_for

ADMIN = {"Authorization": "Bearer admin-key"}
RATE = 200  # rows per second, so 1,990 rows take at least 10 s


@pytest.fixture
def dead_rows(sessions):
    """2,000 dead Slack-outage rows, ids in a known order, each addressed to the test receiver."""
    past = datetime.now(UTC) - timedelta(hours=1)
    rows = [{"id": f"notif_{i:05d}_{uuid.uuid4().hex[:6]}", "type": "ExpirationWarning", "channel": "Webhook",
             "recipient": "", "message": "expiring", "certificate_id": f"bulk-{i}", "status": "dead",
             "retry_count": 5, "last_error": "HTTP 503 from http://127.0.0.1/…", "created_at": past,
             "updated_at": past} for i in range(2000)]
    with sessions.begin() as s:
        s.execute(events.insert(), rows)
    return [r["id"] for r in rows]


def status_counts(sessions):
    with sessions.begin() as s:
        return store.count_by_status(s)


def test_bulk_requeue_counts_paces_skips_and_delivers(sessions, dead_rows, make_env, start_worker, receiver):
    settings = load_settings(make_env(CERTCTL_REQUEUE_RATE=str(RATE)))
    http = create_app(settings).test_client()
    # Given 2,000 dead rows: a dry run counts them and changes nothing
    dry = http.post("/api/v1/notifications/requeue", json={"status": "dead", "dry_run": True}, headers=ADMIN)
    assert dry.status_code == 200 and dry.json == {"dry_run": True, "matched": 2000}
    assert status_counts(sessions)["dead"] == 2000
    # And the last ten rows were already requeued by hand (their delivery is under way)
    for notification_id in dead_rows[-10:]:
        assert http.post(f"/api/v1/notifications/{notification_id}/requeue", headers=ADMIN).status_code == 200
    # When the bulk requeue runs with a worker and a healthy receiver
    start_worker(make_env(CERTCTL_REQUEUE_RATE=str(RATE)))
    started = time.monotonic()
    response = http.post("/api/v1/notifications/requeue", json={"status": "dead"}, headers=ADMIN)
    assert response.status_code == 202
    job_id = response.json["job_id"]
    assert response.json["matched"] == 1990
    # Then a second bulk requeue meanwhile is refused, so the rate stays a real bound
    assert http.post("/api/v1/notifications/requeue", json={"status": "dead"}, headers=ADMIN).status_code == 409
    job = wait_for(lambda: (j := http.get(f"/api/v1/requeue-jobs/{job_id}", headers=ADMIN).json)["status"] == "done"
                   and j, timeout=120, interval=0.2, message="the bulk job to finish")
    elapsed = time.monotonic() - started
    assert (job["matched"], job["requeued"], job["skipped"]) == (1990, 1990, 0)
    # And it went no faster than the configured rate
    assert elapsed >= 1990 / RATE * 0.9, elapsed
    # And every row is delivered exactly once, the hand-requeued ones included (not twice)
    wait_for(lambda: status_counts(sessions)["sent"] == 2000, timeout=120, interval=0.5, message="all delivered")
    keys = [r.key for r in receiver.requests]
    assert len(keys) == 2000 and len(set(keys)) == 2000


def test_bulk_requeue_can_be_cancelled_part_way_and_skips_rows_that_changed(sessions, dead_rows, make_env):
    settings = load_settings(make_env(CERTCTL_REQUEUE_RATE="200"))
    http = create_app(settings).test_client()
    from workers.factory import make_celery  # the job runs in this process: no worker, so no delivery

    worker_app = make_celery(settings)
    from certctl_notify.bulk import run_chunk
    from certctl_notify.publish import CeleryDispatcher

    # Given a bulk requeue of 2,000 rows at 200 rows/s
    job_id = http.post("/api/v1/notifications/requeue", json={"status": "dead"}, headers=ADMIN).json["job_id"]
    # And one row the job has not reached yet is requeued by hand, and another marked read
    assert http.post(f"/api/v1/notifications/{dead_rows[1500]}/requeue", headers=ADMIN).status_code == 200
    assert http.post(f"/api/v1/notifications/{dead_rows[1501]}/read", headers=ADMIN).status_code == 200
    dispatcher = CeleryDispatcher(worker_app)
    # When one chunk of about a second runs, and then the operator cancels
    assert run_chunk(worker_app.runtime.sessions, dispatcher, job_id, chunk_seconds=1.0) is True
    cancelled = http.post(f"/api/v1/requeue-jobs/{job_id}/cancel", headers=ADMIN)
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    # Then the next chunk requeues nothing more
    assert run_chunk(worker_app.runtime.sessions, dispatcher, job_id, chunk_seconds=1.0) is False
    job = http.get(f"/api/v1/requeue-jobs/{job_id}", headers=ADMIN).json
    assert 100 <= job["requeued"] <= 400
    with sessions.begin() as s:
        pending = s.execute(select(func.count()).where(events.c.status == "pending")).scalar_one()
    assert pending == job["requeued"] + 1  # the job's rows plus the one requeued by hand
    assert http.post(f"/api/v1/requeue-jobs/{job_id}/cancel", headers=ADMIN).status_code == 409

    # Given a new job, When it runs to the end, Then rows that changed after it began are skipped
    job_id = http.post("/api/v1/notifications/requeue", json={"status": "dead"}, headers=ADMIN).json["job_id"]
    with sessions.begin() as s:
        s.execute(events.update().where(events.c.id == dead_rows[-1]).values(
            status="read", updated_at=datetime.now(UTC) + timedelta(seconds=1)))
    while run_chunk(worker_app.runtime.sessions, dispatcher, job_id, chunk_seconds=30):
        pass
    job = http.get(f"/api/v1/requeue-jobs/{job_id}", headers=ADMIN).json
    assert job["status"] == "done"
    assert job["requeued"] + job["skipped"] == job["matched"] and job["skipped"] == 1
    assert status_counts(sessions)["dead"] == 0


@pytest.fixture
def audit_refused(sessions):
    """A database that refuses to write a bulk_requeue audit entry (as a blip at that moment would)."""
    with sessions.begin() as s:
        s.execute(text("CREATE FUNCTION certctl_test_refuse() RETURNS trigger LANGUAGE plpgsql AS"
                       " $$ BEGIN RAISE EXCEPTION 'audit refused by the test'; END $$"))
        s.execute(text("CREATE TRIGGER certctl_test_refuse BEFORE INSERT ON audit_log FOR EACH ROW"
                       " WHEN (NEW.action = 'bulk_requeue') EXECUTE FUNCTION certctl_test_refuse()"))
    yield lambda: drop_refusal(sessions)
    drop_refusal(sessions)


def drop_refusal(sessions):
    with sessions.begin() as s:
        s.execute(text("DROP TRIGGER IF EXISTS certctl_test_refuse ON audit_log"))
        s.execute(text("DROP FUNCTION IF EXISTS certctl_test_refuse()"))


def test_a_bulk_requeue_whose_audit_entry_fails_starts_nothing_and_can_be_retried(sessions, dead_rows, make_env,
                                                                                 audit_refused, broker_url):
    http = create_app(load_settings(make_env())).test_client()
    # Given an audit entry that cannot be written at the moment a bulk requeue is asked for
    # When it is asked for, Then it fails as a whole: no job was created (none runs unaudited)
    failed = http.post("/api/v1/notifications/requeue", json={"status": "dead"}, headers=ADMIN)
    assert failed.status_code == 500
    with sessions.begin() as s:
        assert s.execute(text("SELECT count(*) FROM requeue_jobs")).scalar_one() == 0
    # When the database recovers and the client retries, Then the job starts (not 409), audited once
    audit_refused()
    retried = http.post("/api/v1/notifications/requeue", json={"status": "dead"}, headers=ADMIN)
    assert retried.status_code == 202, retried.json
    with sessions.begin() as s:
        audit = s.execute(text("SELECT target FROM audit_log WHERE action = 'bulk_requeue'")).scalars().all()
    assert audit == [retried.json["job_id"]]
