"""The `certctl-notify` commands an operator runs, against the real test database and broker."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis
from click.testing import CliRunner

from certctl_notify import store
from certctl_notify.cli import main
from certctl_notify.dispatch import DELIVERY_QUEUE


@pytest.fixture
def cli(make_env, sessions, monkeypatch):
    for name, value in make_env().items():
        monkeypatch.setenv(name, value)

    def run(*args):
        return CliRunner().invoke(main, list(args))

    return run


def add(sessions, nid, status, **values):
    with sessions.begin() as s:
        store.insert_notification(s, {"id": nid, "type": "RenewalFailure", "channel": "Webhook", "recipient": "",
                                      "message": "m", "status": status, "retry_count": 0, **values})


def test_migrate_is_idempotent(cli):
    assert cli("migrate").exit_code == 0
    result = cli("migrate")
    assert result.exit_code == 0 and "latest schema revision" in result.output


def test_requeue_resets_dead_rows_and_refuses_the_rest(cli, sessions, broker_url):
    add(sessions, "n-dead", "dead", retry_count=5, last_error="HTTP 503")
    add(sessions, "n-sent", "sent")
    result = cli("requeue", "n-dead", "n-sent", "n-missing")
    assert result.exit_code == 1
    assert "n-dead: requeued" in result.output
    assert "n-sent: refused" in result.output and "n-missing: refused" in result.output
    with sessions.begin() as s:
        assert store.get(s, "n-dead").status == "pending" and store.get(s, "n-sent").status == "sent"
    assert redis.Redis.from_url(broker_url).llen(DELIVERY_QUEUE) == 1


def test_sweep_runs_one_tick(cli, sessions, broker_url):
    old = datetime.now(UTC) - timedelta(minutes=10)
    add(sessions, "n-lost", "pending", dispatched_at=old, created_at=old)
    result = cli("sweep")
    assert result.exit_code == 0 and "re-dispatched 1 (1 stale_pending)" in result.output
    assert redis.Redis.from_url(broker_url).llen(DELIVERY_QUEUE) == 1


def test_enqueue_and_show(cli, sessions):
    result = cli("enqueue", "--type", "ExpirationWarning", "--channel", "Webhook", "--message", "expires soon",
                 "--dedupe-key", "cli-1")
    assert result.exit_code == 0, result.output
    nid = result.output.split()[0]
    shown = json.loads(cli("show", nid).output)
    assert shown["id"] == nid and shown["status"] == "pending" and shown["attempts"] == []
    again = cli("enqueue", "--type", "ExpirationWarning", "--channel", "Webhook", "--message", "expires soon",
                "--dedupe-key", "cli-1")
    assert again.output.split()[0] == nid and "existing" in again.output


def test_bad_input_is_a_clear_error(cli, sessions):
    result = cli("enqueue", "--type", "Expired", "--channel", "Webhook", "--message", "x")
    assert result.exit_code != 0 and "type 'Expired' is not one of" in result.output
    assert cli("show", "notif_nope").exit_code != 0
