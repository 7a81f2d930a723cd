"""Every state change is one guarded statement: a late, duplicate or stale writer changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from certctl_notify import store
from certctl_notify.model import events

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


@pytest.fixture
def row_id(sessions):
    with sessions.begin() as s:
        store.insert_notification(s, {"id": "notif_s1", "type": "Revocation", "channel": "Webhook", "recipient": "",
                                      "message": "m", "status": "pending", "retry_count": 0})
    return "notif_s1"


def claim(sessions, nid, attempt=1, token="t:1", now=NOW, lease=60):
    with sessions.begin() as s:
        return store.claim(s, nid, attempt=attempt, token=token, now=now, lease_seconds=lease, worker="w",
                           task_id=token.split(":")[0])


def expire_lease(sessions, nid):
    """What time does to a lease (it is measured on the database's clock, not the test's)."""
    with sessions.begin() as s:
        s.execute(events.update().where(events.c.id == nid).values(
            lease_expires_at=datetime.now(UTC) - timedelta(seconds=1)))


def current(sessions, nid):
    with sessions.begin() as s:
        return store.get(s, nid)


def test_only_the_expected_attempt_can_be_claimed_and_only_once(sessions, row_id):
    assert claim(sessions, row_id, attempt=2) is None  # a stale or future message
    assert claim(sessions, row_id, attempt=1, token="a:1") is not None
    assert claim(sessions, row_id, attempt=1, token="b:1") is None  # duplicate while the lease is live
    # an expired lease (the worker died) can be claimed again
    expire_lease(sessions, row_id)
    assert claim(sessions, row_id, attempt=1, token="c:1") is not None
    assert current(sessions, row_id).lease_owner == "c:1"


def test_an_outcome_from_a_lost_claim_changes_nothing(sessions, row_id):
    claim(sessions, row_id, token="a:1")
    expire_lease(sessions, row_id)
    claim(sessions, row_id, token="b:1")  # a's lease ran out; b took over
    with sessions.begin() as s:
        assert store.mark_sent(s, row_id, token="a:1", now=NOW) is None
        assert store.mark_dead(s, row_id, token="a:1", failures=1, error="late", now=NOW) is None
    assert current(sessions, row_id).status == "pending"
    with sessions.begin() as s:
        done = store.mark_failed(s, row_id, token="b:1", failures=1, next_retry_at=NOW + timedelta(minutes=1),
                                 error="HTTP 503", now=NOW)
    assert (done.status, done.retry_count, done.lease_owner, done.last_error) == ("failed", 1, None, "HTTP 503")


def test_sent_keeps_the_attempt_history_and_clears_the_retry_state(sessions, row_id):
    claim(sessions, row_id, token="a:1")
    with sessions.begin() as s:
        store.mark_failed(s, row_id, token="a:1", failures=1, next_retry_at=NOW, error="x", now=NOW)
    claim(sessions, row_id, attempt=2, token="a:2")
    with sessions.begin() as s:
        sent = store.mark_sent(s, row_id, token="a:2", now=NOW)
    assert (sent.status, sent.retry_count, sent.next_retry_at, sent.last_error, sent.sent_at) == (
        "sent", 1, None, None, NOW)
    with sessions.begin() as s:  # a duplicate success cannot move it again
        assert store.mark_sent(s, row_id, token="a:2", now=NOW) is None


@pytest.mark.parametrize("status, allowed", [("pending", False), ("failed", False), ("sent", True),
                                             ("dead", True), ("read", False)])
def test_mark_read_never_cancels_a_delivery(sessions, row_id, status, allowed):
    with sessions.begin() as s:
        s.execute(events.update().values(status=status))
        assert (store.mark_read(s, row_id, now=NOW) is not None) is allowed


def test_long_errors_are_capped(sessions, row_id):
    claim(sessions, row_id, token="a:1")
    with sessions.begin() as s:
        dead = store.mark_dead(s, row_id, token="a:1", failures=1, error="x" * 10_000, now=NOW)
    assert len(dead.last_error) == store.MAX_ERROR_CHARS


def test_a_lease_runs_on_the_database_clock_whatever_each_hosts_clock_says(sessions, row_id):
    # Given a worker whose clock is an hour slow claims attempt 1 with a 60 s lease
    slow, fast = datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
    assert claim(sessions, row_id, token="slow:1", now=slow, lease=60) is not None
    # Then the lease ends about 60 s after the database's now, not an hour ago
    with sessions.begin() as s:
        db_now = s.execute(text("SELECT now()")).scalar_one()
    lease_left = (current(sessions, row_id).lease_expires_at - db_now).total_seconds()
    assert 55 < lease_left <= 60
    # And a worker whose clock is an hour fast cannot claim the same attempt while it runs
    assert claim(sessions, row_id, token="fast:1", now=fast) is None
    # And neither can an operator's requeue from that host, nor a sweep take it for abandoned
    with sessions.begin() as s:
        s.execute(events.update().where(events.c.id == row_id).values(status="failed"))
        assert store.requeue(s, row_id, now=fast) is None
        assert store.due_for_redispatch(s, now=fast, grace_seconds=0, limit=10) == []


def test_record_sent_closes_the_attempt_record_and_marks_the_row_sent(sessions, row_id):
    claimed = claim(sessions, row_id, token="a:1", now=datetime.now(UTC))
    with sessions.begin() as s:
        sent, seconds = store.record_sent(s, row_id, token="a:1", now=claimed.updated_at + timedelta(seconds=0.25),
                                          attempt_id=claimed.attempt_id, started_at=claimed.updated_at,
                                          status_code=202)
    assert (sent.status, sent.lease_owner, seconds) == ("sent", None, 0.25)
    with sessions.begin() as s:
        [record] = store.list_attempts(s, row_id)
    assert (record.attempt, record.outcome, record.status_code, record.duration_ms) == (1, "sent", 202, 250)
