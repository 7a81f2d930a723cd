"""Retention against real PostgreSQL (and SQLite for the embedded mode): exactly the rows past their age and
status go, with their attempts, a batch per transaction; pending and failed rows never; the counts stay
exact; intake goes on meanwhile; beat runs it on a real worker; the command's dry run changes nothing."""

from __future__ import annotations

import statistics
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import event, func, select, text

from certctl_notify import retention, store
from certctl_notify.db import make_sessions
from certctl_notify.environment import load_settings
from certctl_notify.errors import ConfigError
from certctl_notify.intake import enqueue_alert
from certctl_notify.metrics import Metrics
from certctl_notify.migrate import upgrade
from certctl_notify.model import attempts, events
from certctl_notify.settings import RetentionSettings
from tests.conftest import wait_for
from workers.config import celery_config

DAY = 86400.0
NOW = datetime.now(UTC)
DEFAULTS = RetentionSettings()  # 30 days for sent and read, 90 for dead, batches of 1,000


def add(sessions, row_id: str, status: str, *, changed_days_ago: float, created_days_ago: float | None = None,
        attempt_count: int = 2) -> None:
    """One row last changed ``changed_days_ago``, with its attempts."""
    changed = NOW - timedelta(days=changed_days_ago)
    created = NOW - timedelta(days=created_days_ago if created_days_ago is not None else changed_days_ago)
    with sessions.begin() as s:
        s.execute(events.insert().values(id=row_id, type="RenewalFailure", channel="Webhook", recipient="",
                                         message="m", status=status, retry_count=attempt_count,
                                         created_at=created, updated_at=changed))
        for n in range(1, attempt_count + 1):
            s.execute(attempts.insert().values(notification_id=row_id, attempt=n, started_at=created,
                                               finished_at=created, outcome="retry"))


def add_many(sessions, count: int, status: str, *, changed_days_ago: float, prefix: str = "old") -> None:
    """``count`` rows (one attempt each) made by the database itself, a second apart, oldest first."""
    with sessions.begin() as s:
        s.execute(text("""
            INSERT INTO notification_events (id, type, channel, recipient, message, status, retry_count,
                                             created_at, updated_at, sent_at)
            SELECT :prefix || '_' || lpad(g::text, 6, '0'), 'ExpirationWarning', 'Webhook', '', 'expires soon',
                   :status, 0, now() - make_interval(days => :days + 1),
                   now() - make_interval(days => :days, secs => g), now() - make_interval(days => :days, secs => g)
            FROM generate_series(1, :n) g"""), {"prefix": prefix, "status": status, "days": changed_days_ago,
                                                 "n": count})
        s.execute(text("""
            INSERT INTO notification_attempts (notification_id, attempt, started_at, finished_at, outcome, worker)
            SELECT id, 1, created_at, updated_at, 'sent', 'w' FROM notification_events WHERE id LIKE :prefix || '_%'
        """), {"prefix": prefix})


def ids(sessions) -> set[str]:
    with sessions.begin() as s:
        return set(s.execute(select(events.c.id)).scalars())


def attempt_owners(sessions) -> set[str]:
    with sessions.begin() as s:
        return set(s.execute(select(attempts.c.notification_id)).scalars())


def counts_are_exact(sessions) -> bool:
    with sessions.begin() as s:
        return store.status_counts_now(s) == store.count_by_status(s)


def test_exactly_the_rows_past_their_age_and_status_go_with_their_attempts(sessions):
    # Given rows of every status on both sides of their retention, each with two attempts
    add(sessions, "sent-31d", "sent", changed_days_ago=31)
    add(sessions, "sent-29d", "sent", changed_days_ago=29)
    add(sessions, "read-31d", "read", changed_days_ago=31)
    add(sessions, "read-1d", "read", changed_days_ago=1)
    add(sessions, "dead-91d", "dead", changed_days_ago=91)
    add(sessions, "dead-89d", "dead", changed_days_ago=89)
    # And rows created long ago that reached their final state recently (a late delivery, a dead letter
    # requeued and dead again): their age counts from that last change
    add(sessions, "sent-late", "sent", changed_days_ago=2, created_days_ago=200)
    add(sessions, "dead-again", "dead", changed_days_ago=10, created_days_ago=200)
    # And alerts still to be delivered, years old
    add(sessions, "pending-3y", "pending", changed_days_ago=1000)
    add(sessions, "failed-3y", "failed", changed_days_ago=1000)
    metrics = Metrics()
    # When the purge runs with the default retention
    report = retention.purge(sessions, DEFAULTS, metrics=metrics)
    # Then exactly the three rows past their age went, with their attempts, and nothing else
    kept = {"sent-29d", "read-1d", "dead-89d", "sent-late", "dead-again", "pending-3y", "failed-3y"}
    assert ids(sessions) == kept and attempt_owners(sessions) == kept
    assert report.purged == {"sent": 1, "read": 1, "dead": 1} and report.finished
    # And the counter says so by status, and the maintained counts are still exact
    purged = {s: metrics.registry.get_sample_value("certctl_notification_purged_total", {"status": s})
              for s in ("sent", "read", "dead")}
    assert purged == {"sent": 1, "read": 1, "dead": 1}
    assert counts_are_exact(sessions)
    with sessions.begin() as s:
        store.fold_deltas(s)
    assert counts_are_exact(sessions)


def test_pending_and_failed_rows_are_never_purged_however_old(sessions):
    # Given alerts still to be delivered, ten years old, and a retention of one second
    add(sessions, "pending-10y", "pending", changed_days_ago=3650)
    add(sessions, "failed-10y", "failed", changed_days_ago=3650)
    one_second = RetentionSettings(delivered_seconds=1, dead_seconds=1)
    # When the purge runs, Then it deletes neither
    assert retention.purge(sessions, one_second).total == 0
    assert retention.count_due(sessions, one_second).total == 0
    assert ids(sessions) == {"pending-10y", "failed-10y"}
    # And the statements themselves refuse those statuses
    with sessions.begin() as s:
        for status in ("pending", "failed"):
            with pytest.raises(ValueError, match="never purged"):
                store.purge_batch(s, status, before=NOW, limit=10)
            with pytest.raises(ValueError, match="never purged"):
                store.count_purgeable(s, status, before=NOW)
    assert ids(sessions) == {"pending-10y", "failed-10y"}


@pytest.mark.parametrize("delivered, dead, gone", [
    (0, 90 * DAY, {"dead-1y"}),
    (30 * DAY, 0, {"sent-1y", "read-1y"}),
    (0, 0, set()),
])
def test_a_retention_of_zero_keeps_that_class_for_ever(sessions, delivered, dead, gone):
    for status in ("sent", "read", "dead"):
        add(sessions, f"{status}-1y", status, changed_days_ago=365)
    settings = RetentionSettings(delivered_seconds=delivered, dead_seconds=dead)
    report = retention.purge(sessions, settings)
    assert ids(sessions) == {"sent-1y", "read-1y", "dead-1y"} - gone
    assert set(report.kept) == {"sent", "read", "dead"} - {s.split("-")[0] for s in gone}


def test_it_works_in_batches_each_its_own_short_transaction(sessions, engine):
    # Given 25 sent rows past their age, and batches of 10
    add_many(sessions, 25, "sent", changed_days_ago=40)
    deletes: list[int] = []
    commits: list[int] = []

    def on_delete(conn, cursor, statement, *args):
        if "DELETE FROM notification_events" in statement:
            deletes.append(cursor.rowcount)

    def on_commit(conn):
        commits.append(len(deletes))

    event.listen(engine, "after_cursor_execute", on_delete)
    event.listen(engine, "commit", on_commit)
    try:
        report = retention.purge(sessions, RetentionSettings(batch_size=10))
    finally:
        event.remove(engine, "after_cursor_execute", on_delete)
        event.remove(engine, "commit", on_commit)
    # Then sent went 10, 10, 5 (the short batch says nothing is left), read and dead one empty batch
    # each, and every batch committed on its own
    assert sorted(deletes, reverse=True) == [10, 10, 5, 0, 0]
    assert report.batches == 5 and report.purged == {"sent": 25, "read": 0, "dead": 0}
    assert commits == [1, 2, 3, 4, 5]
    assert ids(sessions) == set() and attempt_owners(sessions) == set()


def test_a_time_budget_ends_the_run_and_the_next_run_goes_on(sessions):
    # Given 30 sent rows due and batches of 10, and a run whose pause after each batch outlasts its budget
    add_many(sessions, 30, "sent", changed_days_ago=40)
    settings = RetentionSettings(batch_size=10)
    first = retention.purge(sessions, settings, budget_seconds=0.2, sleep=lambda _: time.sleep(0.25))
    # Then it stopped after its first batch (sent rows come first) and says so
    assert (first.purged["sent"], first.batches, first.finished) == (10, 1, False)
    # And the next run deletes the rest
    second = retention.purge(sessions, settings)
    assert (second.purged["sent"], second.finished) == (20, True) and ids(sessions) == set()


def test_a_row_another_transaction_holds_is_skipped_not_waited_for(sessions, engine):
    # Given a dead letter past its age that an operator is requeueing (its transaction not yet committed)
    add(sessions, "dead-being-requeued", "dead", changed_days_ago=100)
    add(sessions, "dead-idle", "dead", changed_days_ago=100)
    with engine.connect() as operator:
        transaction = operator.begin()
        assert store.requeue(operator, "dead-being-requeued", now=datetime.now(UTC)) is not None
        # When the purge runs meanwhile
        result: list = []
        runner = threading.Thread(target=lambda: result.append(retention.purge(sessions, DEFAULTS)))
        runner.start()
        runner.join(10)
        # Then it did not wait for the operator, and deleted only the row nobody held
        assert not runner.is_alive() and result[0].purged["dead"] == 1
        transaction.commit()
    # And the requeued row is pending now, which no purge touches
    assert ids(sessions) == {"dead-being-requeued"}
    assert retention.purge(sessions, DEFAULTS).total == 0
    assert counts_are_exact(sessions)


def test_intake_proceeds_while_a_purge_of_many_rows_runs(sessions):
    # Given 100,000 sent rows past their age, each with an attempt
    add_many(sessions, 100_000, "sent", changed_days_ago=40)

    class Unpublished:
        """Intake without a broker: the rows are what is measured."""

        def dispatch(self, *args):
            pass

    def intake(latencies: list[float], until) -> None:
        while not until():
            started = time.perf_counter()
            enqueue_alert(sessions, Unpublished(), {"type": "ExpirationWarning", "channel": "Webhook",
                                                    "message": f"alert {len(latencies)}"})
            latencies.append(time.perf_counter() - started)

    def summary(latencies: list[float]) -> str:
        q = statistics.quantiles(latencies, n=100)
        return (f"{len(latencies)} alerts, p50 {q[49] * 1e3:.2f} ms, p99 {q[98] * 1e3:.2f} ms, "
                f"max {max(latencies) * 1e3:.1f} ms")

    # And intake's latency without a purge, for comparison
    quiet: list[float] = []
    quiet_until = time.monotonic() + 2
    intake(quiet, lambda: time.monotonic() > quiet_until)
    # When the purge runs in a thread while alerts keep arriving
    report: list = []
    purger = threading.Thread(target=lambda: report.append(retention.purge(sessions, DEFAULTS)))
    during: list[float] = []
    started = time.monotonic()
    purger.start()
    intake(during, lambda: not purger.is_alive())
    purger.join()
    elapsed = time.monotonic() - started
    # Then every old row went, and alerts were stored all along, none waiting long
    [done] = report
    assert done.purged["sent"] == 100_000 and done.finished
    print(f"\npurge: {done.total:,} rows in {done.seconds:.2f} s = {done.total / done.seconds:,.0f} rows/s, "
          f"{done.batches} batches\nintake without purge: {summary(quiet)} ({len(quiet) / 2:,.0f}/s)\n"
          f"intake during purge:  {summary(during)} ({len(during) / elapsed:,.0f}/s)")
    assert len(during) >= 50, "intake stalled while the purge ran"
    assert max(during) < 0.5  # not a speed figure: a purge that held a lock intake needs would stall it
    with sessions.begin() as s:
        assert s.execute(select(func.count()).select_from(events)).scalar_one() == len(quiet) + len(during)
    assert attempt_owners(sessions) == set() and counts_are_exact(sessions)


def test_beat_purges_on_the_control_queue_with_a_real_worker(make_env, start_worker, sessions):
    # Given old rows of every status, and a worker with beat purging every half second
    for status in ("sent", "read", "dead", "pending", "failed"):
        add(sessions, f"{status}-old", status, changed_days_ago=365)
    env = make_env(CERTCTL_RETENTION_INTERVAL="500ms", CERTCTL_RETENTION_DELIVERED="30d",
                   CERTCTL_RETENTION_DEAD="90d")
    settings = load_settings(env)
    config = celery_config(settings)
    assert config["beat_schedule"]["certctl-purge"]["schedule"] == 0.5
    assert config["task_routes"]["certctl_notify.purge"] == {"queue": "certctl.control"}
    worker = start_worker(env, beat=True)
    # Then the delivered and dead rows go, and the pending and failed ones stay
    wait_for(lambda: ids(sessions) == {"pending-old", "failed-old"}, timeout=30, message="beat's purge")
    assert "certctl_notify.purge" in worker.log()
    assert attempt_owners(sessions) == {"pending-old", "failed-old"} and counts_are_exact(sessions)


def test_the_purge_command_dry_run_changes_nothing_then_purges(make_env, sessions, monkeypatch):
    from cli import main

    for name, value in make_env(CERTCTL_RETENTION_DEAD="0").items():
        monkeypatch.setenv(name, value)
    add(sessions, "sent-40d", "sent", changed_days_ago=40)
    add(sessions, "read-40d", "read", changed_days_ago=40)
    add(sessions, "sent-1d", "sent", changed_days_ago=1)
    add(sessions, "dead-1y", "dead", changed_days_ago=365)
    before = ids(sessions)
    # When the dry run runs, Then it counts per status, says what is kept, and changes nothing
    dry = CliRunner().invoke(main, ["purge", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    lines = dry.output.splitlines()
    assert lines[0].split()[:2] == ["sent", "1"] and lines[1].split()[:2] == ["read", "1"]
    assert lines[2].split()[:2] == ["dead", "kept"]
    assert lines[-1] == "would delete 2 notifications with their attempts; nothing changed"
    assert ids(sessions) == before
    # When it runs for real, Then it deletes what the dry run counted
    real = CliRunner().invoke(main, ["purge"])
    assert real.exit_code == 0, real.output
    assert real.output.splitlines()[-1].startswith("deleted 2 notifications with their attempts in ")
    assert ids(sessions) == {"sent-1d", "dead-1y"} and counts_are_exact(sessions)


def test_the_embedded_mode_purges_too(tmp_path):
    url = f"sqlite:///{tmp_path / 'embedded.sqlite'}"
    upgrade(url)
    sqlite = make_sessions(url)
    try:
        add(sqlite, "sent-40d", "sent", changed_days_ago=40)
        add(sqlite, "dead-100d", "dead", changed_days_ago=100)
        add(sqlite, "failed-1y", "failed", changed_days_ago=365)
        add(sqlite, "sent-1d", "sent", changed_days_ago=1)
        report = retention.purge(sqlite, RetentionSettings(batch_size=1))
        assert report.purged == {"sent": 1, "read": 0, "dead": 1}
        assert ids(sqlite) == attempt_owners(sqlite) == {"failed-1y", "sent-1d"}
        assert counts_are_exact(sqlite)
    finally:
        sqlite.dispose()


def test_settings_default_validate_and_turn_the_schedule_off():
    settings = load_settings({})
    assert settings.retention == RetentionSettings(30 * DAY, 90 * DAY, 1000, 3600)
    loaded = load_settings({"CERTCTL_RETENTION_DELIVERED": "7d", "CERTCTL_RETENTION_DEAD": "0",
                            "CERTCTL_RETENTION_BATCH": "500", "CERTCTL_RETENTION_INTERVAL": "15m"})
    assert loaded.retention == RetentionSettings(7 * DAY, 0, 500, 900)
    assert "certctl-purge" in celery_config(loaded)["beat_schedule"]
    kept = load_settings({"CERTCTL_RETENTION_DELIVERED": "0", "CERTCTL_RETENTION_DEAD": "0"})
    assert "certctl-purge" not in celery_config(kept)["beat_schedule"]
    for name, value in [("CERTCTL_RETENTION_DELIVERED", "a month"), ("CERTCTL_RETENTION_DEAD", "-1d"),
                        ("CERTCTL_RETENTION_BATCH", "0"), ("CERTCTL_RETENTION_BATCH", "20000"),
                        ("CERTCTL_RETENTION_INTERVAL", "0")]:
        with pytest.raises(ConfigError, match=name):
            load_settings({name: value})
