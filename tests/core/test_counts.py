"""The counts per status that triggers keep (store/counts.py) equal COUNT(*) whatever changes the rows:
concurrent writers, multi-row statements, deletes, rollbacks, a client killed mid-transaction, folds
racing writers; `recount` repairs them; SQLite keeps them too."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from certctl_notify import store
from certctl_notify.db import make_sessions
from certctl_notify.migrate import upgrade
from certctl_notify.model import Status, events, status_counts, status_deltas
from tests.conftest import wait_for

STATUSES = [s.value for s in Status]


def rows(n: int, status: str = "pending") -> list[dict]:
    now = datetime.now(UTC)
    return [{"id": f"notif_{uuid.uuid4().hex}", "type": "RenewalFailure", "channel": "Webhook", "recipient": "",
             "message": "m", "status": status, "retry_count": 0, "created_at": now, "updated_at": now}
            for _ in range(n)]


def counted(sessions) -> dict[str, int]:
    """What a COUNT(*) of the rows says."""
    with sessions.begin() as s:
        return store.count_by_status(s)


def maintained(sessions) -> dict[str, int]:
    with sessions.begin() as s:
        return store.status_counts_now(s)


def deltas(sessions) -> int:
    with sessions.begin() as s:
        return s.execute(select(func.count()).select_from(status_deltas)).scalar_one()


def test_counts_follow_inserts_transitions_requeues_reads_and_deletes(sessions):
    batch = rows(10)
    with sessions.begin() as s:
        s.execute(events.insert(), batch)
    assert maintained(sessions) == {**dict.fromkeys(STATUSES, 0), "pending": 10}
    ids = [r["id"] for r in batch]
    with sessions.begin() as s:
        s.execute(events.update().where(events.c.id.in_(ids[:4])).values(status="dead"))
        s.execute(events.update().where(events.c.id.in_(ids[4:6])).values(status="sent"))
        s.execute(events.update().where(events.c.id == ids[9]).values(message="no status change"))
    now = datetime.now(UTC)
    with sessions.begin() as s:
        assert len(store.requeue_many(s, ids[:2], now=now + timedelta(seconds=1), unchanged_since=now + timedelta(1)))
        store.mark_read(s, ids[2], now=now)
        s.execute(events.delete().where(events.c.id.in_([ids[3], ids[5], ids[8]])))
    assert maintained(sessions) == counted(sessions) == {"pending": 5, "sent": 1, "failed": 0, "dead": 0, "read": 1}
    # folding moves the deltas into the base and changes no count
    with sessions.begin() as s:
        assert store.fold_deltas(s) > 0
    assert deltas(sessions) == 0
    assert maintained(sessions) == counted(sessions)


def test_a_rolled_back_or_killed_transaction_counts_nothing(sessions, database_url):
    batch = rows(3, "failed")
    with sessions.begin() as s:
        s.execute(events.insert(), batch)
    before = maintained(sessions)
    with pytest.raises(RuntimeError), sessions.begin() as s:
        s.execute(events.update().values(status="dead"))
        raise RuntimeError("the worker failed mid-transaction")
    assert maintained(sessions) == before
    # a client SIGKILLed between its UPDATE and its COMMIT (PostgreSQL aborts its transaction)
    url = database_url.replace("postgresql+psycopg2://", "postgresql://")
    script = ("import psycopg2, sys, time; c = psycopg2.connect(sys.argv[1]); k = c.cursor(); "
              "k.execute(\"UPDATE notification_events SET status = 'sent'\"); print('updated', flush=True); "
              "time.sleep(60)")
    victim = subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE, text=True)
    assert victim.stdout.readline().strip() == "updated"
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    with sessions.begin() as s:  # once PostgreSQL has noticed, the row locks are free again
        s.execute(text("SET LOCAL lock_timeout = '10s'"))
        s.execute(events.update().where(events.c.id == batch[0]["id"]).values(status="dead"))
    assert maintained(sessions) == counted(sessions) == {**before, "failed": 2, "dead": 1}


def test_a_storm_of_concurrent_writers_and_folds_leaves_the_counts_exact(sessions):
    # Given 400 rows and eight writers, each changing statuses one row, many rows, or deleting, inserting
    seed = rows(400)
    with sessions.begin() as s:
        s.execute(events.insert(), seed)
    ids = [r["id"] for r in seed]
    errors: list[BaseException] = []
    aborted: list[BaseException] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        rnd = random.Random(n)
        try:
            for _ in range(60):
                try:
                    change(rnd)
                except DBAPIError as exc:  # two writers' random row sets locked in opposite orders
                    if "deadlock detected" not in str(exc):
                        raise
                    aborted.append(exc)  # rolled back: whatever it had counted goes with it
        except BaseException as exc:  # noqa: BLE001 — reported by the test
            errors.append(exc)

    def change(rnd: random.Random) -> None:
        with sessions.begin() as s:
            kind = rnd.random()
            if kind < 0.5:
                s.execute(events.update().where(events.c.id == rnd.choice(ids))
                          .values(status=rnd.choice(STATUSES)))
            elif kind < 0.8:
                s.execute(events.update().where(events.c.id.in_(rnd.sample(ids, 20)))
                          .values(status=rnd.choice(STATUSES)))
            elif kind < 0.9:
                s.execute(events.delete().where(events.c.id.in_(rnd.sample(ids, 3))))
            else:
                s.execute(events.insert(), rows(5, rnd.choice(STATUSES)))

    def folder() -> None:
        try:
            while not stop.is_set():
                with sessions.begin() as s:
                    store.fold_deltas(s)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    # When they all run at once while two folds run in a loop
    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    folders = [threading.Thread(target=folder) for _ in range(2)]
    for t in threads + folders:
        t.start()
    for t in threads:
        t.join(120)
    stop.set()
    for t in folders:
        t.join(30)
    # Then no writer failed but for deadlocks between the writers' own random row sets (never on the
    # counts: appending deltas takes no lock), and the counts are exact, before and after a fold
    assert errors == []
    assert all("notification_status" not in str(exc) for exc in aborted)
    assert maintained(sessions) == counted(sessions)
    with sessions.begin() as s:
        store.fold_deltas(s)
    assert maintained(sessions) == counted(sessions)


def test_recount_repairs_counts_a_manual_edit_broke(sessions):
    with sessions.begin() as s:
        s.execute(events.insert(), rows(4, "dead"))
        s.execute(status_counts.update().where(status_counts.c.status == "dead").values(n=99))
    assert maintained(sessions)["dead"] != 4
    with sessions.begin() as s:
        before, after = store.recount(s)
    assert (before["dead"], after["dead"]) == (99 + 4, 4)
    assert maintained(sessions) == counted(sessions) and deltas(sessions) == 0


def test_the_recount_command_says_what_it_repaired(make_env, sessions, monkeypatch):
    from click.testing import CliRunner

    from cli import main

    for name, value in make_env().items():
        monkeypatch.setenv(name, value)
    with sessions.begin() as s:
        s.execute(events.insert(), rows(2, "sent"))
    assert CliRunner().invoke(main, ["recount"]).output.splitlines()[-1] == "counts were right"
    with sessions.begin() as s:
        s.execute(status_counts.update().where(status_counts.c.status == "sent").values(n=0))
    result = CliRunner().invoke(main, ["recount"])
    assert result.exit_code == 0 and "sent" in result.output and "(was 0)" in result.output
    assert result.output.splitlines()[-1] == "counts repaired"


def test_sqlite_keeps_the_counts_too(tmp_path):
    url = f"sqlite:///{tmp_path / 'embedded.sqlite'}"
    upgrade(url)
    sessions = make_sessions(url)
    try:
        batch = rows(6)
        with sessions.begin() as s:
            s.execute(events.insert(), batch)
            s.execute(events.update().where(events.c.id.in_([r["id"] for r in batch[:3]])).values(status="dead"))
            s.execute(events.delete().where(events.c.id == batch[5]["id"]))
        assert maintained(sessions) == counted(sessions) == {**dict.fromkeys(STATUSES, 0), "pending": 2, "dead": 3}
    finally:
        sessions.dispose()


def test_the_migration_counts_the_rows_that_were_already_there(tmp_path):
    url = f"sqlite:///{tmp_path / 'upgraded.sqlite'}"
    upgrade(url, "0007_attempts_finished_index")
    sessions = make_sessions(url)
    try:
        with sessions.begin() as s:
            s.execute(text("INSERT INTO notification_events (id, type, channel, recipient, message, status) "
                           "VALUES ('a', 'Revocation', 'Webhook', '', 'm', 'dead'), "
                           "('b', 'Revocation', 'Webhook', '', 'm', 'sent')"))
        upgrade(url)
        assert maintained(sessions) == {**dict.fromkeys(STATUSES, 0), "dead": 1, "sent": 1}
    finally:
        sessions.dispose()


def test_beat_folds_the_deltas_on_the_control_queue(make_env, start_worker, sessions):
    with sessions.begin() as s:
        s.execute(events.insert(), rows(3, "dead"))
    assert deltas(sessions) > 0
    start_worker(make_env(), beat=True)
    wait_for(lambda: deltas(sessions) == 0, timeout=20, message="beat's fold of the counts")
    assert maintained(sessions) == counted(sessions)
