"""The metrics module: dead-reason classification, the sweep's counter, the scrape-time gauges on the
real test database (a bounded number of queries whatever the table size), and multiprocess values that
add up across forked processes even when the ``celery`` command imported prometheus_client first."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event

from certctl_notify.channels.base import Notification, UnconfiguredChannel
from certctl_notify.errors import PermanentError, TransientError
from certctl_notify.metrics import DatabaseCollector, Metrics, dead_reason
from certctl_notify.model import events
from certctl_notify.settings import SweepSettings
from certctl_notify.sweep import sweep_once

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def _unconfigured_error() -> Exception:
    notification = Notification("n", "Revocation", "Slack", "", "s", "m", "info", None, NOW, 1)
    with pytest.raises(PermanentError) as raised:
        UnconfiguredChannel("Slack", "CERTCTL_SLACK_WEBHOOK_URL").send(notification)
    return raised.value


@pytest.mark.parametrize(("error", "reason"), [
    (TransientError("HTTP 503 from http://x/"), "exhausted"),
    (PermanentError("HTTP 400 from http://x/"), "permanent"),
    (_unconfigured_error(), "unconfigured"),
])
def test_dead_reason_tells_an_unconfigured_channel_from_other_permanent_errors(error, reason):
    assert dead_reason(error) == reason


def sample(metrics: Metrics, name: str, **labels) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def add_rows(sessions, count: int, status: str, **values) -> None:
    rows = [{"id": f"notif_{uuid.uuid4().hex}", "type": "RenewalFailure", "channel": "Webhook", "recipient": "",
             "message": "m", "status": status, "retry_count": 0, "created_at": NOW, "updated_at": NOW,
             "dispatched_at": NOW, **values} for _ in range(count)]
    with sessions.begin() as s:
        s.execute(events.insert(), rows)


def test_sweep_counts_what_it_redispatched_by_reason(sessions):
    # Given one overdue retry and two pending rows nobody picked up
    add_rows(sessions, 1, "failed", retry_count=1, next_retry_at=NOW - timedelta(minutes=10),
             dispatched_at=NOW - timedelta(minutes=10))
    add_rows(sessions, 2, "pending", dispatched_at=NOW - timedelta(minutes=10))
    metrics = Metrics()

    class Accepting:
        def dispatch(self, notification_id, attempt, dispatched_at=None):
            """Accept every publish."""

        def oldest_queued_dispatch(self):
            return None  # an empty queue

    # When the sweep runs
    sweep_once(sessions, Accepting(), SweepSettings(120, 120, 1000), now=lambda: NOW, metrics=metrics)
    # Then its counter says what it re-dispatched, and the reason it did not see stays at 0
    assert sample(metrics, "certctl_notification_sweep_redispatched_total", reason="overdue") == 1
    assert sample(metrics, "certctl_notification_sweep_redispatched_total", reason="stale_pending") == 2
    assert sample(metrics, "certctl_notification_sweep_redispatched_total", reason="abandoned") == 0


def collect_counting_queries(collector, engine) -> tuple[dict, int]:
    statements = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        families = {f.name: f for f in collector.collect()}
    finally:
        event.remove(engine, "before_cursor_execute", count)
    return families, len(statements)


def test_database_gauges_take_one_query_whatever_the_table_size(sessions, engine):
    collector = DatabaseCollector(sessions, Metrics(), now=lambda: NOW + timedelta(minutes=5))
    # Given 10 rows
    add_rows(sessions, 6, "sent")
    add_rows(sessions, 2, "dead")
    add_rows(sessions, 1, "pending")
    add_rows(sessions, 1, "failed", next_retry_at=NOW)
    small, small_queries = collect_counting_queries(collector, engine)
    # When the table holds 5,000 rows
    add_rows(sessions, 4990, "sent")
    large, large_queries = collect_counting_queries(collector, engine)
    # Then a scrape makes the same single query, and the gauges follow the table
    assert small_queries == large_queries == 1
    assert {s.labels["status"]: s.value for s in small["certctl_notifications"].samples} == {
        "pending": 1, "sent": 6, "failed": 1, "dead": 2, "read": 0}
    assert {s.labels["status"]: s.value for s in large["certctl_notifications"].samples}["sent"] == 4996
    assert large["certctl_notification_dead_total"].samples[0].value == 2
    assert large["certctl_notification_retries_due"].samples[0].value == 1
    assert large["certctl_notification_oldest_pending_seconds"].samples[0].value == 300


MULTIPROCESS_SCRIPT = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    import celery.bin.celery  # imports prometheus_client (Flower's entry point) before anything of ours
    from certctl_notify import metrics

    root = Path(sys.argv[1])
    metrics.enable_multiprocess(root, "worker", fold=True)
    children = []
    for n in (1, 2):
        pid = os.fork()
        if pid == 0:
            metrics.Metrics().requeued("bulk", n * 10)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
        metrics.mark_process_dead(root, "worker", pid)
    for family in metrics._SharedDirectory(root).collect():
        for s in family.samples:
            if s.name == "certctl_notification_requeues_total" and s.labels == {"mode": "bulk"}:
                print(s.value)
""")


def test_counters_of_forked_processes_add_up_after_the_celery_command_imported_the_client(tmp_path):
    # Given a process in which prometheus_client was imported before the metrics directory was known
    # When two forked children increment the same counter by 10 and 20
    result = subprocess.run([sys.executable, "-c", MULTIPROCESS_SCRIPT, str(tmp_path)], capture_output=True,
                            text=True, timeout=60)
    # Then the directory holds both, and the merge adds them up
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["30.0"]
