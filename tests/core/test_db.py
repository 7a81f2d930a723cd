"""Pooled PostgreSQL connections: lone statements commit themselves, and a connection the server cut
(restart, idle timeout, pg_terminate_backend) neither fails a delivery nor makes it send twice."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from certctl_notify import intake, store
from certctl_notify.channels import build_channels
from certctl_notify.db import PING_AFTER_IDLE_SECONDS, make_sessions
from certctl_notify.delivery import Attempt, Delivery
from certctl_notify.errors import DeliveryError
from certctl_notify.retry import RetryPolicy
from tests.support.rows import row_of

ALERT = {"type": "Revocation", "channel": "Webhook", "message": "certificate revoked"}


class NoBroker:
    """Intake without publishing: these tests run the delivery steps themselves."""

    def dispatch(self, notification_id: str, attempt: int, dispatched_at=None) -> None:
        """Publish nothing (the rows stay pending for the test to deliver)."""


@pytest.fixture
def own(database_url, sessions):
    """A transaction factory of its own (fresh pools) on the emptied test database."""
    transactions = make_sessions(database_url)
    yield transactions
    transactions.dispose()


def backend_pids(transactions) -> set[int]:
    """The server processes behind every connection the factory holds in its pool."""
    pids = set()
    for record in list(transactions.engine.pool._pool.queue):
        if record.dbapi_connection is not None:
            pids.add(record.dbapi_connection.info.backend_pid)
    return pids


def cut(engine, pids: set[int]) -> None:
    """What a server restart or an idle-session timeout does to these connections."""
    with engine.connect() as conn:
        for pid in pids:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
        conn.commit()


def test_a_lone_statement_is_committed_for_every_other_connection(own, sessions):
    with own.begin() as conn:
        inserted = store.insert_notification(conn, {"id": "notif_db1", "type": "Revocation", "channel": "Webhook",
                                                     "recipient": "", "message": "m", "status": "pending",
                                                     "retry_count": 0})
    assert inserted is not None
    assert row_of(sessions, "notif_db1").status == "pending"


def test_a_failing_lone_statement_leaves_nothing_behind(own, sessions):
    with pytest.raises(DBAPIError), own.begin() as conn:
        conn.execute(text("INSERT INTO notification_events (id, type, channel, message, status) "
                          "VALUES ('notif_db2', 'Revocation', 'Webhook', 'm', 'no-such-status')"))
    with sessions.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM notification_events")).scalar() == 0


def test_a_connection_cut_while_idle_is_replaced_before_anyone_uses_it(own, sessions, engine):
    # Given an intake that left its connections pooled, which the server then cut
    intake.enqueue_alert(own, NoBroker(), ALERT)
    cut(engine, backend_pids(own))
    # When the next intake comes after the pool's idle threshold
    time.sleep(PING_AFTER_IDLE_SECONDS + 0.2)
    [result] = intake.enqueue_alert(own, NoBroker(), ALERT)
    # Then it succeeds on a fresh connection
    assert row_of(sessions, result.row.id).status == "pending"


def test_intake_survives_a_connection_cut_while_in_use(own, sessions, engine):
    # Given an intake that just used its pooled connection, which the server then cut
    intake.enqueue_alert(own, NoBroker(), ALERT)
    cut(engine, backend_pids(own))
    # When the next alert arrives at once (too soon for the idle ping)
    [result] = intake.enqueue_alert(own, NoBroker(), {**ALERT, "dedupe_key": "cut-1"})
    # Then it is stored once, on a new connection
    assert row_of(sessions, result.row.id).status == "pending"
    with sessions.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM notification_events WHERE dedupe_key = 'cut-1'")).scalar() == 1


class Recorded:
    """Remembers what it was asked to publish."""

    def __init__(self):
        self.published: list[tuple[str, int]] = []

    def dispatch(self, notification_id: str, attempt: int, dispatched_at=None) -> None:
        self.published.append((notification_id, attempt))


def test_intake_of_one_message_twice_stores_it_once(sessions):
    # Given an alert that came in message "m-1" and was stored (and published)
    dispatcher = Recorded()
    fields = {"type": "Revocation", "channels": ["Webhook", "Email"], "message": "certificate revoked",
              "recipient": "ops@example.test"}
    first = intake.enqueue_alert(sessions, dispatcher, fields, source="m-1")
    # When the same message is handled again (redelivered by the broker, or retried by Celery)
    again = intake.enqueue_alert(sessions, dispatcher, fields, source="m-1")
    # Then it finds the rows the first time made: no second row, nothing published again
    assert [r.row.id for r in again] == [r.row.id for r in first]
    assert [r.created for r in first] == [True, True] and [r.created for r in again] == [False, False]
    assert dispatcher.published == [(r.row.id, 1) for r in first]
    with sessions.begin() as conn:
        assert sum(store.count_by_status(conn).values()) == 2
    # while another message with the same fields is another alert
    [other, _] = intake.enqueue_alert(sessions, dispatcher, fields, source="m-2")
    assert other.created and other.row.id not in {r.row.id for r in first}


def test_delivery_steps_survive_a_connection_cut_while_in_use(own, sessions, engine, receiver, settings):
    # Given a row, and a delivery whose connections the server cuts right before each step
    delivery = Delivery(own, build_channels(settings), RetryPolicy.from_settings(settings.retry), lease_seconds=30)
    [result] = intake.enqueue_alert(own, NoBroker(), {**ALERT, "certificate_id": "c-cut"})
    attempt = Attempt(result.row.id, 1, "task-cut", "test")
    # When every pooled connection dies between steps (too soon after use for the idle ping)
    cut(engine, backend_pids(own))
    row = delivery.claim(attempt)
    sent = delivery.send(row, attempt)
    cut(engine, backend_pids(own))
    recorded = delivery.record_sent(row, attempt, sent)
    # Then the claim and the outcome were each written once, and the alert was sent exactly once
    assert recorded
    done = row_of(sessions, result.row.id)
    assert done.status == "sent" and done.lease_owner is None
    assert len(receiver.for_key("c-cut")) == 1
    with sessions.begin() as conn:
        attempts = store.list_attempts(conn, result.row.id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "sent")]


@pytest.mark.parametrize("answers, status", [([503], "failed"), ([410], "dead")])
def test_failure_records_survive_a_connection_cut_while_in_use(own, sessions, engine, receiver, settings, answers,
                                                               status):
    # Given an attempt the receiver refuses (503: retry later; 410: never)
    receiver.script(f"c-cut-{status}", answers)
    delivery = Delivery(own, build_channels(settings), RetryPolicy.from_settings(settings.retry), lease_seconds=30)
    [result] = intake.enqueue_alert(own, NoBroker(), {**ALERT, "certificate_id": f"c-cut-{status}"})
    attempt = Attempt(result.row.id, 1, f"task-cut-{status}", "test")
    row = delivery.claim(attempt)
    with pytest.raises(DeliveryError) as failure:
        delivery.send(row, attempt)
    # When the server cuts the connections (each used a moment ago) just before the outcome is written
    with own.begin() as conn:
        conn.execute(text("SELECT 1"))
    cut(engine, backend_pids(own))
    if status == "failed":
        assert delivery.record_retry(row, attempt, failure.value) is not None
    else:
        assert delivery.record_dead(result.row.id, attempt, failure.value) is not None
    # Then the outcome is on the row and in the attempt history, once
    done = row_of(sessions, result.row.id)
    assert (done.status, done.retry_count, done.lease_owner) == (status, 1, None)
    with sessions.begin() as conn:
        attempts = store.list_attempts(conn, result.row.id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(1, "retry" if status == "failed" else "dead")]
