"""The embedded mode's SQLite runs the same store: the database clock, leases, greatest, insert-ignore."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from certctl_notify import store
from certctl_notify.db import make_sessions
from certctl_notify.migrate import upgrade

ROW = {"id": "n1", "type": "Revocation", "channel": "Webhook", "recipient": "", "message": "m", "status": "pending",
       "retry_count": 0, "dedupe_key": "k"}


@pytest.fixture
def sqlite(tmp_path):
    url = f"sqlite:///{tmp_path / 'embedded.sqlite'}"
    upgrade(url)
    sessions = make_sessions(url)
    yield sessions
    sessions.dispose()


def claim(sessions, token: str, lease: float):
    with sessions.begin() as s:
        return store.claim(s, "n1", attempt=1, token=token, now=datetime.now(UTC), lease_seconds=lease, worker="w",
                           task_id=token)


def test_a_lease_on_sqlite_holds_for_its_length_and_then_runs_out(sqlite):
    with sqlite.begin() as s:
        assert store.insert_notification(s, ROW) is not None
        assert store.insert_notification(s, {**ROW, "id": "n2"}) is None  # the key names n1 on Webhook
    claimed = claim(sqlite, "a", lease=0.3)
    assert claimed is not None and claimed.attempt_id is not None
    assert timedelta(seconds=0.2) < claimed.lease_expires_at - datetime.now(UTC) <= timedelta(seconds=0.3)
    assert claim(sqlite, "b", lease=0.3) is None  # live lease
    time.sleep(0.4)
    assert claim(sqlite, "c", lease=0.3) is not None  # ran out


def test_a_finished_job_on_sqlite_counts_every_unrequeued_row_as_skipped(sqlite):
    now = datetime.now(UTC)
    with sqlite.begin() as s:
        store.insert_job(s, job_id="job_1", filter={}, rate=10.0, matched=5, cutoff=now, actor="ops", now=now)
        store.advance_job(s, "job_1", generation=0, cursor="n9", requeued=3, skipped=0, now=now)
        done = store.finish_job(s, "job_1", generation=0, now=now)
    assert (done.status, done.requeued, done.skipped) == ("done", 3, 2)
