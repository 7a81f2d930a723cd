"""The `certctl-notify` commands an operator runs: the API-backed ones against a real API server on
127.0.0.1, the direct ones against the real test database and broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import redis
from click.testing import CliRunner

from certctl_notify import store
from certctl_notify.publish import DELIVERY_QUEUE
from cli import main
from tests.conftest import wait_for


def run(*args):
    return CliRunner().invoke(main, list(args))


def api(api_url, *args, key="admin-key"):
    return run(*args[:1], "--url", api_url, "--key", key, *args[1:])


def add(sessions, nid, status, **values):
    with sessions.begin() as s:
        store.insert_notification(s, {"id": nid, "type": "RenewalFailure", "channel": "Webhook", "recipient": "",
                                      "message": "m", "status": status, "retry_count": 0, **values})


def test_migrate_is_idempotent(env):
    assert run("migrate").exit_code == 0
    result = run("migrate")
    assert result.exit_code == 0 and "latest schema revision" in result.output


def test_requeue_by_id_resets_dead_rows_and_refuses_the_rest(api_url, sessions, broker_url):
    add(sessions, "n-dead", "dead", retry_count=5, last_error="HTTP 503")
    add(sessions, "n-sent", "sent")
    result = api(api_url, "requeue", "n-dead", "n-sent", "n-missing")
    assert result.exit_code == 3  # the worst outcome: one id does not exist (3) beats one in the wrong state (4)
    assert "n-dead: requeued" in result.stdout
    assert "n-sent: conflict: " in result.stderr and "n-missing: not found: " in result.stderr
    with sessions.begin() as s:
        assert store.get(s, "n-dead").status == "pending" and store.get(s, "n-sent").status == "sent"
    assert redis.Redis.from_url(broker_url).llen(DELIVERY_QUEUE) == 1


def test_requeue_needs_an_admin_key(api_url, sessions):
    add(sessions, "n-dead", "dead", retry_count=5)
    result = api(api_url, "requeue", "n-dead", key="read-key")
    assert result.exit_code == 1 and "admin key" in result.stderr
    with sessions.begin() as s:
        assert store.get(s, "n-dead").status == "dead"


def test_requeue_all_dead_dry_run_then_a_bulk_job_with_progress(api_url, sessions, make_env, start_worker, receiver):
    for i in range(30):
        add(sessions, f"n-dead-{i:02d}", "dead", retry_count=5, channel="Slack" if i < 10 else "Webhook",
            updated_at=datetime.now(UTC) - timedelta(minutes=5))
    dry = api(api_url, "requeue", "--all-dead", "--channel", "Webhook", "--dry-run")
    assert dry.exit_code == 0 and "20 dead notifications would be requeued" in dry.output
    start_worker(make_env())  # runs the bulk job's chunks, then delivers to the test receiver
    result = api(api_url, "requeue", "--all-dead", "--channel", "Webhook")
    assert result.exit_code == 0, result.output
    assert "done: 20 requeued, 0 skipped" in result.output

    def counts():
        with sessions.begin() as s:
            return store.count_by_status(s)
    wait_for(lambda: counts()["sent"] == 20, message="the requeued rows to be delivered")
    assert counts()["dead"] == 10  # the Slack rows were not part of the filter


def test_list_show_stats_and_enqueue_through_the_api(api_url, sessions):
    created = api(api_url, "enqueue", "--type", "ExpirationWarning", "--channel", "Webhook", "--message",
                  "expires soon", "--dedupe-key", "cli-1")
    assert created.exit_code == 0, created.output
    nid = created.output.split()[0]
    again = api(api_url, "enqueue", "--type", "ExpirationWarning", "--channel", "Webhook", "--message", "x",
                "--dedupe-key", "cli-1")
    assert again.output.split()[0] == nid and "existing" in again.output
    add(sessions, "n-dead", "dead", retry_count=5, last_error="HTTP 503 from https://hooks.example/…")
    listed = api(api_url, "list", "--status", "dead", key="read-key")
    assert listed.exit_code == 0 and "n-dead" in listed.output and nid not in listed.output
    assert "page 1: 1 of 1" in listed.output
    shown = json.loads(api(api_url, "show", nid, "--json", key="read-key").output)
    assert shown["id"] == nid and shown["status"] == "pending" and shown["attempts"] == []
    readable = api(api_url, "show", nid, key="read-key").output
    assert readable.startswith(nid) and "Attempt 1/5" in readable and "attempt 1 is queued or running" in readable
    stats = api(api_url, "stats", key="read-key").output.splitlines()
    assert [line.split()[:2] for line in stats] == [["dead", "1"], ["failed", "0"], ["pending", "1"], ["sent", "0"],
                                                    ["read", "0"], ["total", "2"]]


def test_bad_input_and_unreachable_api_are_clear_errors(api_url):
    result = api(api_url, "enqueue", "--type", "Expired", "--channel", "Webhook", "--message", "x")
    assert result.exit_code == 2 and "'Expired' is not one of" in result.stderr
    missing = api(api_url, "show", "notif_nope")
    assert missing.exit_code == 3 and "does not exist" in missing.stderr
    # An id is one path segment: it cannot name another endpoint.
    sneaky = api(api_url, "show", "../../stats/summary")
    assert sneaky.exit_code == 3 and "not found" in sneaky.stderr and sneaky.stdout == ""
    down = run("list", "--url", "http://127.0.0.1:1", "--key", "k")
    assert down.exit_code == 1 and "cannot reach the API" in down.stderr


def test_sweep_runs_one_tick(env, sessions, broker_url):
    old = datetime.now(UTC) - timedelta(minutes=10)
    add(sessions, "n-lost", "pending", dispatched_at=old, created_at=old)
    result = run("sweep")
    assert result.exit_code == 0 and "re-dispatched 1 (1 stale_pending)" in result.output
    assert redis.Redis.from_url(broker_url).llen(DELIVERY_QUEUE) == 1


def test_test_channel_reports_delivery_and_failure(env, make_env, start_worker, receiver, sessions):
    start_worker(make_env())
    ok = run("test-channel", "Webhook")
    assert ok.exit_code == 0 and "delivered via Webhook on attempt 1" in ok.output
    assert receiver.requests and receiver.requests[-1].json["data"]["subject"] == "certctl-notify test alert"
    unconfigured = run("test-channel", "Slack", "--wait", "20")
    assert unconfigured.exit_code != 0
    assert "channel Slack is not configured (set CERTCTL_SLACK_WEBHOOK_URL)" in unconfigured.output


def test_mark_read_acknowledges_sent_and_dead_rows_and_refuses_pending(api_url, sessions):
    add(sessions, "n-sent", "sent", sent_at=datetime.now(UTC))
    add(sessions, "n-dead", "dead", retry_count=5)
    add(sessions, "n-pending", "pending")
    result = api(api_url, "mark-read", "n-sent", "n-dead", "--json")
    assert result.exit_code == 0
    assert [r["status"] for r in json.loads(result.stdout)["results"]] == ["marked_as_read", "marked_as_read"]
    refused = api(api_url, "mark-read", "n-pending")
    assert refused.exit_code == 4 and "n-pending: conflict" in refused.stderr
    with sessions.begin() as s:
        assert [store.get(s, i).status for i in ("n-sent", "n-dead", "n-pending")] == ["read", "read", "pending"]
    assert api(api_url, "mark-read", "n-pending", key="read-key").exit_code == 1
