"""Attempt outcomes per hour and channel: exactly the window's hours, UTC, on PostgreSQL and SQLite."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import event, select, text

from certctl_notify import store
from certctl_notify.db import make_sessions
from certctl_notify.migrate import upgrade
from certctl_notify.model import Outcome, attempts
from certctl_notify.store import OutcomeCounts

NOW = datetime(2026, 11, 29, 12, 34, 56, tzinfo=UTC)
CURRENT_HOUR = datetime(2026, 11, 29, 12, tzinfo=UTC)
FIRST_HOUR = CURRENT_HOUR - timedelta(hours=23)  # 2026-11-28 13:00
IST = timezone(timedelta(hours=5, minutes=30))

#: (channel, outcome, finished_at): some in the window, some just outside it, one still running.
ATTEMPTS = [
    ("Slack", "sent", NOW - timedelta(minutes=30)),  # 12:04, the current partial hour
    ("Slack", "sent", NOW),
    ("Slack", "retry", CURRENT_HOUR),  # on the hour: belongs to the hour it starts
    ("Email", "dead", CURRENT_HOUR - timedelta(microseconds=1)),  # 11:59:59.999999
    ("Email", "sent", FIRST_HOUR),  # the window's first instant
    ("Webhook", "retry", FIRST_HOUR + timedelta(hours=5, minutes=1)),
    ("Webhook", "dead", FIRST_HOUR + timedelta(hours=5, minutes=59)),
    ("Webhook", "sent", FIRST_HOUR - timedelta(microseconds=1)),  # just before the window
    ("Webhook", "sent", NOW - timedelta(hours=25)),  # 25 h old
    ("Slack", "dead", CURRENT_HOUR + timedelta(hours=1)),  # after the window (a clock ahead)
    ("Email", "sent", None),  # still running
]


def add_attempts(sessions, rows=ATTEMPTS):
    """One notification per channel, and an attempt record per row."""
    with sessions.begin() as s:
        for channel in {channel for channel, _, _ in rows}:
            store.insert_notification(s, {"id": f"n-{channel}", "type": "Revocation", "channel": channel,
                                          "recipient": "", "message": "m", "status": "sent", "retry_count": 0})
        s.execute(attempts.insert(), [
            {"notification_id": f"n-{channel}", "attempt": i, "started_at": NOW - timedelta(hours=30),
             "finished_at": finished, "outcome": outcome if finished else None}
            for i, (channel, outcome, finished) in enumerate(rows, start=1)
        ])


def assert_the_window_is_counted(buckets):
    assert [b.start for b in buckets] == [FIRST_HOUR + timedelta(hours=i) for i in range(24)]
    by_hour = {b.start: b for b in buckets}
    assert by_hour[CURRENT_HOUR].by_channel == {"Slack": OutcomeCounts(sent=2, retry=1)}
    assert by_hour[CURRENT_HOUR - timedelta(hours=1)].by_channel == {"Email": OutcomeCounts(dead=1)}
    assert by_hour[FIRST_HOUR].by_channel == {"Email": OutcomeCounts(sent=1)}
    assert by_hour[FIRST_HOUR + timedelta(hours=5)].by_channel == {"Webhook": OutcomeCounts(retry=1, dead=1)}
    busy = {CURRENT_HOUR, CURRENT_HOUR - timedelta(hours=1), FIRST_HOUR, FIRST_HOUR + timedelta(hours=5)}
    for bucket in buckets:
        if bucket.start not in busy:
            assert bucket.by_channel == {} and bucket.counts() == OutcomeCounts() == bucket.counts("Slack")
    # Nothing from before the window (the 25 h old attempt included), after it, or unfinished
    assert sum((b.counts() for b in buckets), OutcomeCounts()) == OutcomeCounts(sent=3, retry=2, dead=2)


def test_each_of_the_last_24_hours_counts_its_attempts_by_channel_and_outcome(sessions):
    # Given attempts of three channels in the window, at its edges and outside it
    add_attempts(sessions)
    # When the last 24 hours are counted
    with sessions.begin() as s:
        buckets = store.hourly_outcomes(s, now=NOW)
    # Then there are 24 hourly buckets, oldest first, empty ones included, and only the window counts
    assert_the_window_is_counted(buckets)
    assert buckets[-1].counts() == OutcomeCounts(sent=2, retry=1)
    assert buckets[-1].counts("Email") == OutcomeCounts()


def test_hours_are_utc_whatever_the_caller_and_session_time_zones(sessions):
    # Given the same attempts, and a PostgreSQL session whose TimeZone is half an hour off UTC's hours
    add_attempts(sessions)
    with sessions.begin() as s:
        s.execute(text("SET LOCAL TIME ZONE 'Asia/Kolkata'"))
        # When the hours are counted with "now" given in that zone
        buckets = store.hourly_outcomes(s, now=NOW.astimezone(IST))
    # Then the buckets are still UTC hours, with the same counts
    assert_the_window_is_counted(buckets)


def test_the_window_has_as_many_buckets_as_hours_asked_for(sessions):
    add_attempts(sessions)
    with sessions.begin() as s:
        [only] = store.hourly_outcomes(s, now=NOW, hours=1)
        with pytest.raises(ValueError):
            store.hourly_outcomes(s, now=NOW.replace(tzinfo=None))
    assert (only.start, only.counts()) == (CURRENT_HOUR, OutcomeCounts(sent=2, retry=1))


def statement_of_hourly_outcomes(session) -> tuple[str, object]:
    """The SQL and parameters that `store.hourly_outcomes` sends, as the driver gets them."""
    sent = []

    def capture(_conn, _cursor, statement, parameters, _context, _executemany):
        sent.append((statement, parameters))

    event.listen(session, "before_cursor_execute", capture)
    try:
        store.hourly_outcomes(session, now=NOW)
    finally:
        event.remove(session, "before_cursor_execute", capture)
    [(sql, parameters)] = sent
    return sql, parameters


def test_postgresql_reads_the_hourly_counts_not_the_attempts_and_folding_changes_nothing(sessions):
    # Given the statement hourly_outcomes runs on PostgreSQL
    add_attempts(sessions)
    with sessions.begin() as s:
        statement, _ = statement_of_hourly_outcomes(s)
        before = store.hourly_outcomes(s, now=NOW)
    # Then it reads the per-hour counts the triggers keep, never an attempt or a notification
    assert "attempt_hourly" in statement
    assert "notification_attempts" not in statement and "notification_events" not in statement
    # And folding the deltas into the base changes no bucket
    with sessions.begin() as s:
        assert store.fold_hourly(s, now=NOW) > 0
        assert store.hourly_outcomes(s, now=NOW) == before
        assert s.execute(text("SELECT count(*) FROM attempt_hourly_deltas")).scalar_one() == 0


@pytest.fixture
def sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'embedded.sqlite'}"
    upgrade(url)
    sessions = make_sessions(url)
    yield sessions
    sessions.dispose()


def test_sqlite_counts_the_same_hours_through_the_index(sqlite):
    # Given the same attempts in the embedded mode's SQLite
    add_attempts(sqlite)
    with sqlite.begin() as s:
        # When the last 24 hours are counted, Then the buckets and counts are PostgreSQL's
        assert_the_window_is_counted(store.hourly_outcomes(s, now=NOW.astimezone(IST)))
        # And the statement reads the window through the index
        statement, parameters = statement_of_hourly_outcomes(s)
        plan = " ".join(str(r[-1]) for r in s.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters))
    assert "idx_notification_attempts_finished" in plan, plan


def test_an_attempt_carries_its_rows_channel_so_the_chart_reads_no_row(sessions):
    # Given a Slack row claimed for its first attempt (the claim opens the attempt record)
    with sessions.begin() as s:
        store.insert_notification(s, {"id": "notif_chan", "type": "Revocation", "channel": "Slack",
                                      "recipient": "", "message": "m", "status": "pending", "retry_count": 0})
    now = datetime.now(UTC)
    with sessions.begin() as s:
        claimed = store.claim(s, "notif_chan", attempt=1, token="t:1", now=now, lease_seconds=60, worker="w",
                              task_id="t")
        store.finish_attempt(s, "notif_chan", attempt=1, task_id="t", now=now, outcome=Outcome.SENT,
                             attempt_id=claimed.attempt_id, started_at=now)
    # Then its attempt record names the channel itself, and the chart counts it there
    with sessions.begin() as s:
        assert s.execute(select(attempts.c.channel)).scalar_one() == "Slack"
        buckets = store.hourly_outcomes(s, now=now)
    assert buckets[-1].counts("Slack").sent == 1
