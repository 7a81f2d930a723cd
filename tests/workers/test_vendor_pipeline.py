"""The vendor channels end to end: real PostgreSQL, real Redis, a real worker subprocess configured only
by environment, and a real HTTP peer on 127.0.0.1 standing in for Slack, Teams, PagerDuty and OpsGenie."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from api.app import create_app
from certctl_notify import intake
from certctl_notify.environment import load_settings
from certctl_notify.publish import CeleryDispatcher
from tests.conftest import wait_for
from tests.support.receiver import Answer
from tests.support.rows import attempts_of, settled
from tests.support.vendor_receiver import VendorReceiver

SLACK_TOKEN = "XXXXSECRETXXXX"
ROUTING_KEY = "R0UT1NGK3YSECRET"
API_KEY = "GENIEKEY-0PSG3N1E"
ADMIN = {"Authorization": "Bearer admin-key"}


@dataclass(frozen=True)
class Vendor:
    url_variable: str  #: the variable naming where to POST
    path: str  #: where the peer listens for this vendor
    accepted: Answer  #: the vendor's success answer
    variables: tuple[tuple[str, str], ...] = ()  #: the rest of the environment it needs

    def env(self, peer: VendorReceiver) -> dict:
        return {self.url_variable: peer.url_for(self.path), **dict(self.variables)}


VENDORS = {
    "Slack": Vendor("CERTCTL_SLACK_WEBHOOK_URL", f"/services/T000/B000/{SLACK_TOKEN}",
                    Answer(200, body=b"ok")),
    "Teams": Vendor("CERTCTL_TEAMS_WEBHOOK_URL", "/workflows/4c1f/triggers/manual/paths/invoke?sig=T3AMSS1G",
                    Answer(202, body=b"")),
    "PagerDuty": Vendor("CERTCTL_PAGERDUTY_URL", "/v2/enqueue",
                        Answer(202, body=b'{"status":"success","message":"Event processed"}'),
                        (("CERTCTL_PAGERDUTY_ROUTING_KEY", ROUTING_KEY),)),
    "OpsGenie": Vendor("CERTCTL_OPSGENIE_URL", "/v2/alerts",
                       Answer(202, body=b'{"result":"Request will be processed","requestId":"r-1"}'),
                       (("CERTCTL_OPSGENIE_API_KEY", API_KEY),)),
}


@pytest.fixture
def peer():
    with VendorReceiver() as receiver:
        yield receiver


@pytest.fixture
def enqueue(sessions, producer):
    dispatcher = CeleryDispatcher(producer)

    def enqueue(*channels: str, **fields) -> list:
        fields = {"type": "ExpirationWarning", "channels": list(channels), "message": "cert expires soon",
                  "certificate_id": "mc-api-prod", **fields}
        return [result.row for result in intake.enqueue_alert(sessions, dispatcher, fields)]

    return enqueue


@pytest.mark.parametrize("channel", VENDORS)
def test_a_401_goes_dead_after_one_attempt(sessions, peer, make_env, start_worker, enqueue, channel):
    # Given a vendor that refuses our credentials
    vendor = VENDORS[channel]
    peer.script(vendor.path, [Answer(401, body=b"invalid credentials")])
    start_worker(make_env(**vendor.env(peer)))
    # When an alert for that channel is enqueued
    (row,) = enqueue(channel)
    # Then it is dead after one attempt, says why, and the vendor was asked once
    done = wait_for(settled(sessions, row.id, "dead", "sent"), message=f"{channel} dead letter")
    assert (done.status, done.retry_count) == ("dead", 1)
    assert "HTTP 401" in done.last_error and "invalid credentials" in done.last_error
    [only] = attempts_of(sessions, row.id)
    assert (only.outcome, only.error_class, only.status_code) == ("dead", "permanent", 401)
    assert len(peer.at(vendor.path)) == 1


@pytest.mark.parametrize("channel", VENDORS)
def test_a_429_is_retried_no_sooner_than_retry_after_then_sent(
    sessions, peer, make_env, start_worker, enqueue, channel
):
    # Given a vendor that throttles once asking for 1 s (twenty times the 50 ms backoff), then accepts
    vendor = VENDORS[channel]
    peer.script(vendor.path, [Answer(429, headers={"Retry-After": "1"}), vendor.accepted])
    start_worker(make_env(CERTCTL_NOTIFICATION_RETRY_CAP="3s", **vendor.env(peer)))
    # When an alert is enqueued
    (row,) = enqueue(channel)
    # Then it is sent on the second attempt, which waited at least the second asked for
    done = wait_for(settled(sessions, row.id, "sent", "dead"), message=f"{channel} delivery")
    assert (done.status, done.retry_count, done.last_error) == ("sent", 1, None)
    first, second = peer.at(vendor.path)
    assert second.at - first.at >= 1.0
    history = attempts_of(sessions, row.id)
    assert [(a.outcome, a.status_code) for a in history] == [("retry", 429), ("sent", vendor.accepted.status)]


def test_pagerduty_resends_keep_the_dedup_key(sessions, peer, make_env, start_worker, enqueue):
    # Given PagerDuty failing twice before accepting
    vendor = VENDORS["PagerDuty"]
    peer.script(vendor.path, [500, 503, vendor.accepted])
    start_worker(make_env(**vendor.env(peer)))
    # When an alert is enqueued
    (row,) = enqueue("PagerDuty")
    done = wait_for(settled(sessions, row.id, "sent", "dead"), message="PagerDuty delivery")
    # Then all three attempts were the same event under the notification's id, so PagerDuty keeps one alert
    assert (done.status, done.retry_count) == ("sent", 2)
    got = peer.at(vendor.path)
    assert [r.json["dedup_key"] for r in got] == [row.id] * 3
    assert len({r.body for r in got}) == 1


def fail_with_echoed_secrets(sessions, peer, make_env, start_worker, enqueue):
    """Slack and PagerDuty answer 500 with bodies echoing their credentials until one alert to both is
    dead (two attempts each); returns the dead rows, the worker and its environment."""
    slack, pagerduty = VENDORS["Slack"], VENDORS["PagerDuty"]
    slack_url = peer.url_for(slack.path)
    slack_echo = f"rollup_error posting to {slack_url} ({SLACK_TOKEN})"
    pagerduty_echo = {"message": f"routing_key {ROUTING_KEY} failed", "echo": f"key={ROUTING_KEY}"}
    peer.script(slack.path, [Answer(500, body=slack_echo.encode())])
    peer.script(pagerduty.path, [Answer(500, body=json.dumps(pagerduty_echo).encode())])
    env = make_env(CERTCTL_NOTIFICATION_MAX_ATTEMPTS="2", **slack.env(peer), **pagerduty.env(peer))
    worker = start_worker(env)
    rows = enqueue("Slack", "PagerDuty")
    dead = [wait_for(settled(sessions, row.id, "dead", "sent"), message="dead letters") for row in rows]
    assert [row.status for row in dead] == ["dead", "dead"]
    return dead, worker, env


def test_slack_and_pagerduty_secrets_stay_out_of_stored_errors_and_the_api(
    sessions, peer, make_env, start_worker, enqueue
):
    # Given Slack and PagerDuty failing with bodies that echo the webhook token and the routing key
    # When one alert to both exhausts its budget
    dead, _worker, env = fail_with_echoed_secrets(sessions, peer, make_env, start_worker, enqueue)
    # Then last_error, every attempt's error and the API's answer explain the failure without either secret
    api = create_app(load_settings(env)).test_client()
    for row in dead:
        errors = " | ".join(a.error for a in attempts_of(sessions, row.id))
        response = api.get(f"/api/v1/notifications/{row.id}", headers=ADMIN)
        assert response.status_code == 200 and response.json["last_error"] == row.last_error
        assert "HTTP 500" in row.last_error and "[redacted]" in row.last_error and "[redacted]" in errors
        for where, text in {"last_error": row.last_error, "attempt errors": errors,
                            "API": response.get_data(as_text=True)}.items():
            for secret in (SLACK_TOKEN, ROUTING_KEY):
                assert secret not in text, f"{secret} leaked into {where}: {text}"


def test_slack_and_pagerduty_secrets_stay_out_of_the_worker_log(
    sessions, peer, make_env, start_worker, enqueue
):
    # Given the same failures, When the alert is dead
    dead, worker, _env = fail_with_echoed_secrets(sessions, peer, make_env, start_worker, enqueue)
    # Then the worker log recorded every attempt, and neither secret
    log = worker.log()
    assert all(f"{row.id} attempt 2/2" in log for row in dead)
    for secret in (SLACK_TOKEN, ROUTING_KEY):
        leaks = [line for line in log.splitlines() if secret in line]
        assert not leaks, f"{secret} leaked into the worker log: {leaks}"
