"""The Email channel end to end: real PostgreSQL, Redis broker and worker subprocess, and a real SMTP
relay (aiosmtpd) on 127.0.0.1 whose replies each test scripts per recipient."""

from __future__ import annotations

import email
import email.policy
import re
import socket
import threading

import pytest
from aiosmtpd.controller import Controller

from certctl_notify import intake
from certctl_notify.publish import CeleryDispatcher, make_producer
from tests.conftest import wait_for
from tests.support.receiver import RawPeer
from tests.support.rows import attempts_of, row_of, settled


class ScriptedRelay:
    """Answers DATA for ``recipient`` with the scripted replies in order (the last repeats); 250 otherwise."""

    def __init__(self):
        self._lock = threading.Lock()
        self._scripts: dict[str, list[str]] = {}
        self.delivered: dict[str, list[bytes]] = {}
        self.tries: dict[str, int] = {}

    def script(self, recipient: str, replies: list[str]) -> None:
        self._scripts[recipient] = list(replies)

    async def handle_DATA(self, server, session, envelope):
        [recipient] = envelope.rcpt_tos
        with self._lock:
            self.tries[recipient] = self.tries.get(recipient, 0) + 1
            script = self._scripts.get(recipient) or ["250 OK"]
            reply = script.pop(0) if len(script) > 1 else script[0]
            if reply.startswith("250"):
                self.delivered.setdefault(recipient, []).append(envelope.content)
        return reply


@pytest.fixture
def relay():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    handler = ScriptedRelay()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    handler.port = port
    yield handler
    controller.stop()


@pytest.fixture
def enqueue(sessions, broker_url):
    producer = make_producer(broker_url)
    dispatcher = CeleryDispatcher(producer)

    def enqueue(key: str, **fields):
        fields = {"type": "ExpirationWarning", "channel": "Email", "recipient": f"{key}@example.com",
                  "message": f"cert {key} expires soon", "certificate_id": key, **fields}
        return intake.enqueue_alert(sessions, dispatcher, fields)[0].row

    yield enqueue
    producer.close()


def smtp_env(make_env, port: int, **overrides) -> dict:
    return make_env(CERTCTL_SMTP_HOST="127.0.0.1", CERTCTL_SMTP_PORT=port, CERTCTL_SMTP_TLS="none",
                    CERTCTL_SMTP_FROM="certctl@alerts.example", **overrides)


def test_an_email_alert_is_delivered_and_marked_sent(sessions, relay, make_env, start_worker, enqueue):
    # Given a worker configured with a plain relay
    start_worker(smtp_env(make_env, relay.port))
    # When an Email alert is enqueued
    row = enqueue("c-mail", subject="Zertifikat läuft ab — api.example")
    # Then the row is sent after one attempt, and the mailbox holds the message
    done = wait_for(settled(sessions, row.id, "sent", "dead"), message="delivery")
    assert (done.status, done.retry_count, done.last_error) == ("sent", 0, None)
    [only] = attempts_of(sessions, row.id)
    assert (only.outcome, only.status_code) == ("sent", 250)
    [raw] = relay.delivered["c-mail@example.com"]
    got = email.message_from_bytes(raw, policy=email.policy.default)
    assert got["Subject"] == "Zertifikat läuft ab — api.example"
    assert got["To"] == "c-mail@example.com" and got["From"] == "certctl@alerts.example"
    assert got["Message-ID"] == f"<{row.id}@alerts.example>"
    assert "cert c-mail expires soon" in got.get_content()


def test_a_451_is_retried_then_delivered(sessions, relay, make_env, start_worker, enqueue):
    # Given a relay that answers 451 once, then accepts
    relay.script("c-451@example.com", ["451 4.3.0 try later", "250 OK"])
    worker = start_worker(smtp_env(make_env, relay.port))
    # When an Email alert is enqueued
    row = enqueue("c-451")
    # Then it is delivered on the second attempt, retry_count 1 telling of the one failure
    done = wait_for(settled(sessions, row.id, "sent", "dead"), message="delivery")
    assert (done.status, done.retry_count) == ("sent", 1)
    history = attempts_of(sessions, row.id)
    assert [(a.outcome, a.status_code) for a in history] == [("retry", 451), ("sent", 250)]
    assert "try later" in history[0].error
    assert len(relay.delivered["c-451@example.com"]) == 1
    # And the worker's log lines give the relay's reply codes as SMTP codes
    log = wait_for(lambda: f"{row.id} attempt 2/5" in worker.log() and worker.log(), message="the log lines")
    assert re.search(rf"{row.id} attempt 1/5 via Email: failed after \d+ ms \(SMTP 451\): .*try later.*; "
                     r"attempt 2/5 in 0\.05s$", log, flags=re.MULTILINE)
    assert re.search(rf"{row.id} attempt 2/5 via Email: sent after \d+ ms \(SMTP 250\)$", log, flags=re.MULTILINE)


def test_a_550_goes_dead_after_one_attempt(sessions, relay, make_env, start_worker, enqueue):
    # Given a relay that refuses the mailbox
    relay.script("c-550@example.com", ["550 5.1.1 no such user"])
    start_worker(smtp_env(make_env, relay.port))
    # When an Email alert is enqueued
    row = enqueue("c-550")
    # Then it is dead at once, with the relay's reason, and was tried only once
    done = wait_for(settled(sessions, row.id, "sent", "dead"), message="dead letter")
    assert (done.status, done.retry_count) == ("dead", 1)
    assert "SMTP 550 5.1.1 no such user" in done.last_error
    [only] = attempts_of(sessions, row.id)
    assert (only.outcome, only.error_class, only.status_code) == ("dead", "permanent", 550)
    assert relay.tries["c-550@example.com"] == 1 and "c-550@example.com" not in relay.delivered


def test_a_hanging_relay_times_out_without_holding_up_other_deliveries(
    sessions, receiver, make_env, start_worker, enqueue
):
    # Given a relay that accepts connections and never answers, and a 1 s SMTP timeout
    stop = threading.Event()
    hung = RawPeer(lambda conn: stop.wait(30)).start()
    try:
        start_worker(smtp_env(make_env, hung.port, CERTCTL_SMTP_TIMEOUT="1s"), concurrency=2)
        stuck = enqueue("c-hung")
        wait_for(lambda: hung.connections >= 1, message="the worker to connect to the hanging relay")
        # When webhooks are enqueued while one worker process waits on the relay
        hooks = [enqueue(f"c-hook-{i}", channel="Webhook", recipient="") for i in range(3)]
        # Then the other process delivers them meanwhile, and the email is still undelivered
        for hook in hooks:
            wait_for(settled(sessions, hook.id, "sent", "dead"), timeout=10, message="webhook delivery")
            assert row_of(sessions, hook.id).status == "sent"
        # (still in its retry budget: the webhooks did not wait for the email to give up)
        assert row_of(sessions, stuck.id).status in ("pending", "failed")
        # And the email's attempts fail transiently with a timeout until its budget is spent
        done = wait_for(settled(sessions, stuck.id, "sent", "dead"), timeout=30, message="dead letter")
        assert (done.status, done.retry_count) == ("dead", 5)
        assert "no answer from 127.0.0.1" in done.last_error and "within 1 s" in done.last_error
        assert {a.error_class for a in attempts_of(sessions, stuck.id)} == {"transient"}
        assert hung.connections == 5
    finally:
        stop.set()
        hung.stop()
