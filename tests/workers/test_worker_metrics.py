"""A worker as its own scrape target (CERTCTL_WORKER_METRICS_PORT, no directory shared with the API):
its counters add up its pool processes, carry on across a restart and across replaced pool processes,
and the files behind them stay few however many processes came and went."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from certctl_notify import intake
from certctl_notify.metrics import process_directory
from certctl_notify.publish import CeleryDispatcher
from tests.conftest import wait_for
from tests.support.api_server import free_port
from tests.support.rows import settled


def sent_total(port: int) -> float | None:
    """certctl_notification_attempts_total{channel="Webhook", outcome="sent"} as the worker serves it."""
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
    except httpx.TransportError:
        return None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "certctl_notification_attempts_total" and s.labels == {"channel": "Webhook",
                                                                                "outcome": "sent"}:
                return s.value
    return 0.0


def deliver(sessions, producer, keys):
    rows = [intake.enqueue_alert(sessions, CeleryDispatcher(producer), {
        "type": "ExpirationWarning", "channel": "Webhook", "message": f"{k} expires", "certificate_id": k})[0].row
        for k in keys]
    for row in rows:
        wait_for(settled(sessions, row.id, "sent"), message="delivery")


def test_a_workers_own_counters_carry_on_across_a_restart(sessions, make_env, start_worker, producer, tmp_path):
    # Given a worker serving its own counters, no CERTCTL_METRICS_DIR
    port = free_port()
    env = make_env(CERTCTL_WORKER_METRICS_PORT=str(port), CERTCTL_DATA_DIR=str(tmp_path / "host"))
    first = start_worker(env)
    deliver(sessions, producer, [f"c-wm-{n}" for n in range(3)])
    assert wait_for(lambda: sent_total(port) == 3, message="3 sends counted") is True
    # When it is killed (nothing runs at exit) and started again on the same host
    first.kill()
    start_worker(env)
    # Then its counters carry on from 3, neither falling to 0 (a false reset to Prometheus) nor doubling
    assert wait_for(lambda: sent_total(port) is not None, message="the new worker's /metrics") is not None
    assert sent_total(port) == 3
    deliver(sessions, producer, [f"c-wm-more-{n}" for n in range(2)])
    assert wait_for(lambda: sent_total(port) == 5, message="5 sends counted") is True


def test_pool_processes_replaced_after_every_task_leave_few_files_and_exact_totals(
    sessions, make_env, start_worker, producer, tmp_path
):
    # Given a worker whose pool processes are replaced after every task
    port = free_port()
    env = make_env(CERTCTL_WORKER_METRICS_PORT=str(port), CERTCTL_DATA_DIR=str(tmp_path / "host"),
                   CERTCTL_WORKER_MAX_TASKS_PER_CHILD="1")
    start_worker(env, concurrency=2)
    # When 12 alerts are delivered (12 pool processes come and go)
    deliver(sessions, producer, [f"c-recycled-{n}" for n in range(12)])
    # Then the total is exact and the directory holds the archive and the live processes' files only
    assert wait_for(lambda: sent_total(port) == 12, message="12 sends counted") is True
    directory = process_directory(tmp_path / "host" / "metrics", "worker")
    counter_files = sorted(p.name for p in directory.glob("counter_*.db"))
    assert "counter_archive.db" in counter_files and len(counter_files) <= 1 + 3, counter_files
