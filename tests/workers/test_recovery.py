"""PostgreSQL is the source of truth: lost broker messages and killed workers never lose an alert."""

from __future__ import annotations

import time

import psutil
import pytest
import redis
from sqlalchemy import make_url

from certctl_notify import intake, store
from certctl_notify.environment import load_settings
from certctl_notify.publish import CeleryDispatcher
from tests.conftest import BROKERS, lose_every_message, wait_for
from tests.support.receiver import Answer
from tests.support.rows import row_of
from tests.support.tcp_proxy import TcpProxy
from workers.config import visibility_timeout


def alert(key: str) -> dict:
    return {"type": "RenewalFailure", "channel": "Webhook", "message": f"renewal of {key} failed",
            "certificate_id": key}


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_retry_lost_with_the_broker_flushed_is_redispatched_by_the_sweep(
    sessions, receiver, make_env, start_worker, producer, broker_url
):
    # Given a first attempt that failed and a retry held by a worker for 2 s
    receiver.script("c-flush", [503, 200])
    env = make_env(CERTCTL_NOTIFICATION_RETRY_BASE="2s", CERTCTL_NOTIFICATION_RETRY_CAP="2s")
    first = start_worker(env)
    [result] = intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert("c-flush"))
    row = wait_for(lambda: (r := row_of(sessions, result.row.id)).status == "failed" and r, message="first failure")
    assert row.next_retry_at is not None
    # When the worker dies holding the retry and the broker loses every message
    first.kill()
    lose_every_message(broker_url)
    # Then a new worker with beat finds the overdue row in PostgreSQL and delivers it
    start_worker(env, beat=True)
    done = wait_for(lambda: (r := row_of(sessions, row.id)).status != "failed" and r, timeout=30,
                    message="sweep re-dispatch")
    assert done.status == "sent"
    assert done.retry_count == 1
    assert len(receiver.for_key("c-flush")) == 2


def cut_broker_connections(worker, broker_url: str) -> int:
    """What a Redis restart or failover does to a running worker: every TCP connection it (main
    process, pool and beat) holds to Redis is closed by the server. Returns how many were cut."""
    server = redis.Redis.from_url(broker_url)
    port = server.connection_pool.connection_kwargs["port"]
    cut = 0
    for process in [psutil.Process(worker.proc.pid), *worker.children()]:
        for conn in process.net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_ESTABLISHED:
                cut += server.client_kill_filter(_type=None, addr=f"{conn.laddr.ip}:{conn.laddr.port}")
    server.close()
    return cut


def test_worker_whose_broker_connections_are_cut_reconnects_and_loses_nothing(
    sessions, receiver, make_env, start_worker, producer, broker_url
):
    # Given a running worker (with beat) holding a 2 s retry of one alert and in the middle of
    # sending another (the receiver holds that request for 1.5 s)
    receiver.script("c-cut-retry", [503, 200])
    receiver.script("c-cut-inflight", [Answer(200, delay=1.5)])
    env = make_env(CERTCTL_NOTIFICATION_RETRY_BASE="2s", CERTCTL_NOTIFICATION_RETRY_CAP="2s")
    worker = start_worker(env, beat=True)
    dispatcher = CeleryDispatcher(producer)
    [held] = intake.enqueue_alert(sessions, dispatcher, alert("c-cut-retry"))
    wait_for(lambda: row_of(sessions, held.row.id).status == "failed", message="first failure")
    [inflight] = intake.enqueue_alert(sessions, dispatcher, alert("c-cut-inflight"))
    wait_for(lambda: receiver.for_key("c-cut-inflight"), message="the held request")
    # When Redis closes every connection the worker has (a Redis restart or failover)
    assert cut_broker_connections(worker, broker_url) >= 1
    # Then the same worker reconnects and delivers an alert raised after the cut
    [after] = intake.enqueue_alert(sessions, dispatcher, alert("c-cut-after"))
    wait_for(lambda: row_of(sessions, after.row.id).status == "sent", timeout=30, message="delivery after the cut")
    # the send in flight was let finish (not cancelled and sent again), and the held retry is
    # delivered by the broker or the sweep, whichever comes first: each attempt exactly once
    for result in (inflight, held):
        wait_for(lambda r=result: row_of(sessions, r.row.id).status == "sent", timeout=30, message="recovery")
    assert row_of(sessions, held.row.id).retry_count == 1
    assert [len(receiver.for_key(k)) for k in ("c-cut-inflight", "c-cut-retry", "c-cut-after")] == [1, 2, 1]
    with sessions.begin() as s:
        assert [(a.attempt, a.outcome) for a in store.list_attempts(s, inflight.row.id)] == [(1, "sent")]
    assert worker.proc.poll() is None  # the same worker, not a restarted one
    # and its log says what happened without Celery 6's warning about the setting we pin
    assert "Connection to broker lost" in worker.log() and "optional breaking change" not in worker.log()


def test_a_worker_stopped_for_a_deploy_finishes_its_send_and_hands_back_its_retries(
    sessions, receiver, make_env, start_worker, producer
):
    # Given a worker holding a 2 s retry of one alert and in the middle of sending another
    receiver.script("c-deploy-retry", [503, 200])
    receiver.script("c-deploy-inflight", [Answer(200, delay=1.5)])
    env = make_env(CERTCTL_NOTIFICATION_RETRY_BASE="2s", CERTCTL_NOTIFICATION_RETRY_CAP="2s")
    old = start_worker(env)
    dispatcher = CeleryDispatcher(producer)
    [held] = intake.enqueue_alert(sessions, dispatcher, alert("c-deploy-retry"))
    wait_for(lambda: row_of(sessions, held.row.id).status == "failed", message="first failure")
    [inflight] = intake.enqueue_alert(sessions, dispatcher, alert("c-deploy-inflight"))
    wait_for(lambda: receiver.for_key("c-deploy-inflight"), message="the held request")
    # When it is stopped with SIGTERM (a deploy) and its replacement starts (no beat: the broker's
    # own hand-back must be enough)
    old.stop()
    assert old.proc.returncode == 0
    # Then the send in flight was finished and recorded by the old worker, once
    row = row_of(sessions, inflight.row.id)
    assert row.status == "sent" and row.lease_owner is None
    start_worker(env)
    # and the retry it held is delivered by the new one
    done = wait_for(lambda: (r := row_of(sessions, held.row.id)).status == "sent" and r, timeout=30,
                    message="the handed-back retry")
    assert done.retry_count == 1
    assert [len(receiver.for_key(k)) for k in ("c-deploy-inflight", "c-deploy-retry")] == [1, 2]


def assert_each_sent_once_on_attempt_1(sessions, receiver, results) -> None:
    """Wait until every enqueued row is sent; each on its first attempt, and received exactly once."""
    for result in results:
        done = wait_for(lambda r=result: (row := row_of(sessions, r.row.id)).status == "sent" and row, timeout=30,
                        message="delivery after the outage")
        assert done.retry_count == 0
        assert len(receiver.for_key(result.row.certificate_id)) == 1


def test_a_short_database_outage_is_waited_out_and_alerts_raised_meanwhile_flow_when_it_ends(
    sessions, receiver, make_env, start_worker, producer, database_proxy
):
    # Given a worker (no beat: no sweep to fall back on) whose every connection to PostgreSQL is cut
    proxy, proxied_url = database_proxy
    env = make_env(CERTCTL_DATABASE_URL=proxied_url, CERTCTL_TASK_TIME_LIMIT="10s", CERTCTL_CLAIM_LEASE="12s")
    worker = start_worker(env)  # a claim may wait 2.5 s (1/4 of the time limit) for the database
    proxy.cut()
    # When alerts arrive meanwhile (committed by a producer that still reaches the database)
    results = [intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert(f"c-pg-blip-{i}"))[0]
               for i in range(3)]
    # Then the deliveries wait to claim their rows and send nothing meanwhile: no send without a claim
    wait_for(lambda: "claim: the database is unavailable" in worker.log(), message="claims meeting the outage")
    assert not any(receiver.for_key(f"c-pg-blip-{i}") for i in range(3))
    # And once PostgreSQL is back each is delivered once, on attempt 1, by the messages themselves
    proxy.restore()
    assert_each_sent_once_on_attempt_1(sessions, receiver, results)
    assert "failed outside the channel" not in worker.log()


def test_a_long_database_outage_delays_alerts_but_never_loses_or_repeats_them(
    sessions, receiver, make_env, start_worker, producer, database_proxy
):
    # Given a worker (with beat) cut off from PostgreSQL for longer than a claim may wait (0.5 s here)
    proxy, proxied_url = database_proxy
    env = make_env(CERTCTL_DATABASE_URL=proxied_url, CERTCTL_TASK_TIME_LIMIT="2s", CERTCTL_CLAIM_LEASE="3s")
    worker = start_worker(env, beat=True)
    proxy.cut()
    # When alerts arrive meanwhile
    results = [intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert(f"c-pg-out-{i}"))[0]
               for i in range(3)]
    # Then each delivery task gives up its claim and sends nothing: no send without a claim
    wait_for(lambda: worker.log().count("failed outside the channel") >= 3, message="three failed claims")
    assert not any(receiver.for_key(f"c-pg-out-{i}") for i in range(3))
    assert {row_of(sessions, r.row.id).status for r in results} == {"pending"}
    # And once PostgreSQL is reachable again the sweep re-dispatches each, delivered once on attempt 1
    proxy.restore()
    assert_each_sent_once_on_attempt_1(sessions, receiver, results)
    assert worker.proc.poll() is None


def test_a_database_restart_during_a_send_is_waited_out_and_the_alert_is_not_sent_twice(
    sessions, receiver, make_env, start_worker, producer, database_proxy
):
    # Given a worker (with beat) in the middle of a send the receiver holds for 1 s
    proxy, proxied_url = database_proxy
    receiver.script("c-pg-restart", [Answer(200, delay=1.0)])
    env = make_env(CERTCTL_DATABASE_URL=proxied_url, CERTCTL_TASK_TIME_LIMIT="10s", CERTCTL_CLAIM_LEASE="12s")
    start_worker(env, beat=True)  # an outcome may wait 7.5 s (3/4 of the time limit) for the database
    [result] = intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert("c-pg-restart"))
    wait_for(lambda: receiver.for_key("c-pg-restart"), message="the held request")
    # When PostgreSQL goes away before the outcome is recorded, and is back 1.5 s later (a restart)
    proxy.cut()
    time.sleep(1.5)  # the receiver answers 1 s after the request: the outcome record meets the outage
    proxy.restore()
    # Then the outcome is recorded once the database is back: sent, on attempt 1, sent only once
    done = wait_for(lambda: (r := row_of(sessions, result.row.id)).status == "sent" and r, timeout=30,
                    message="the recorded outcome")
    assert done.retry_count == 0 and done.lease_owner is None
    with sessions.begin() as s:
        assert [(a.attempt, a.outcome) for a in store.list_attempts(s, result.row.id)] == [(1, "sent")]
    time.sleep(1.0)  # a sweep tick and its grace: a wrongly re-dispatched send would show up now
    assert len(receiver.for_key("c-pg-restart")) == 1


def test_alerts_posted_while_the_broker_is_down_are_accepted_and_delivered_once_it_is_back(
    sessions, receiver, make_env, start_worker, broker_url
):
    from api.app import create_app
    from certctl_notify.environment import load_settings

    # Given an API whose connection to Redis goes through a proxy, and that has published before
    url = make_url(broker_url)
    proxy = TcpProxy(url.host, url.port).start()
    try:
        env = make_env(CERTCTL_BROKER_URL=f"redis://127.0.0.1:{proxy.port}/{url.database}")
        http = create_app(load_settings(env)).test_client()
        admin = {"Authorization": "Bearer admin-key"}
        assert http.post("/api/v1/notifications", headers=admin, json=alert("c-broker-before")).status_code == 202
        # When Redis goes away
        proxy.cut()
        started = time.monotonic()
        response = http.post("/api/v1/notifications", headers=admin, json=alert("c-broker-down"))
        # Then the alert is still accepted (stored, pending) and the request does not hang on the broker
        assert response.status_code == 202 and response.json["data"][0]["status"] == "pending"
        assert time.monotonic() - started < 10
    finally:
        proxy.stop()
    # And once a worker with beat runs against the broker, the sweep delivers it, once
    start_worker(make_env(), beat=True)
    row_id = response.json["data"][0]["id"]
    wait_for(lambda: row_of(sessions, row_id).status == "sent", timeout=30, message="delivery by the sweep")
    wait_for(lambda: receiver.for_key("c-broker-before"), message="the alert published before the outage")
    assert [len(receiver.for_key(k)) for k in ("c-broker-before", "c-broker-down")] == [1, 1]


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_intake_whose_publish_was_lost_is_picked_up_by_the_sweep(
    sessions, receiver, make_env, start_worker, producer, broker_url
):
    # Given a pending row whose delivery message was lost before any worker saw it
    [result] = intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert("c-lost-intake"))
    lose_every_message(broker_url)
    # When a worker with beat starts
    start_worker(make_env(), beat=True)
    # Then the sweep publishes it again and it is delivered once
    done = wait_for(lambda: (r := row_of(sessions, result.row.id)).status == "sent" and r, timeout=30,
                    message="sweep delivery")
    assert done.retry_count == 0
    assert len(receiver.for_key("c-lost-intake")) == 1


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_alerts_raised_while_no_worker_runs_are_delivered_when_one_starts(
    sessions, receiver, make_env, start_worker, producer
):
    # Given alerts published while no worker has ever consumed (or declared) the delivery queue
    results = [intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert(f"c-offline-{i}"))[0]
               for i in range(3)]
    # When a worker starts (no beat: the broker's own messages must be enough)
    start_worker(make_env(), beat=False)
    # Then each is delivered once
    for result in results:
        wait_for(lambda r=result: row_of(sessions, r.row.id).status == "sent", message="delivery after start")
    for i in range(3):
        assert len(receiver.for_key(f"c-offline-{i}")) == 1


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_worker_killed_mid_send_leaves_the_row_recoverable_not_stuck(
    sessions, receiver, make_env, start_worker, producer
):
    # Given a slow receiver holding the first request for 2 s
    receiver.script("c-kill", [Answer(200, delay=2.0), 200])
    env = make_env(CERTCTL_TASK_TIME_LIMIT="3s", CERTCTL_CLAIM_LEASE="4s")
    worker = start_worker(env, beat=True, concurrency=1)
    [result] = intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert("c-kill"))
    wait_for(lambda: receiver.for_key("c-kill"), message="first request")
    # When the pool process making the send (the one connected to the receiver) is killed with SIGKILL
    port = receiver.server.server_address[1]
    [sender] = [c for c in worker.children() if any(
        conn.raddr and conn.raddr.port == port for conn in c.net_connections(kind="tcp"))]
    sender.kill()
    # Then the row is not stuck: once the claim lease runs out the sweep re-dispatches it and it is sent
    done = wait_for(lambda: (r := row_of(sessions, result.row.id)).status == "sent" and r, timeout=30,
                    message="recovery after SIGKILL")
    assert done.lease_owner is None
    got = receiver.for_key("c-kill")
    # At-least-once across a crash: a resend carries the same webhook-id so the receiver can drop it
    assert len(got) == 2
    assert {r.headers["webhook-id"] for r in got} == {result.row.id}
    with sessions.begin() as s:
        history = store.list_attempts(s, result.row.id)
    # the killed attempt stays open in the audit trail; the recovery attempt is recorded as sent
    assert [(a.attempt, a.outcome) for a in history] == [(1, None), (1, "sent")]


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_enqueue_over_send_task_with_only_the_broker_url(sessions, receiver, make_env, start_worker, producer):
    # Given a service that knows only the broker URL and the task name
    start_worker(make_env())
    fields = {**alert("c-send-task"), "dedupe_key": "renewal-c-send-task-1"}
    # When it calls send_task twice with the same dedupe_key
    producer.send_task("certctl_notify.enqueue", kwargs=fields)
    producer.send_task("certctl_notify.enqueue", kwargs=fields)
    # Then one row exists, delivered once
    def delivered():
        with sessions.begin() as s:
            row = store.get_by_dedupe_key(s, "renewal-c-send-task-1", fields["channel"])
        return row is not None and row.status == "sent" and row
    wait_for(delivered, message="delivery via send_task")
    time.sleep(0.5)  # give a wrongly duplicated delivery time to show up
    assert len(receiver.for_key("c-send-task")) == 1
    with sessions.begin() as s:
        assert store.count_by_status(s)["sent"] == 1


@pytest.mark.parametrize("broker", BROKERS, indirect=True)
def test_an_enqueue_message_delivered_twice_creates_one_alert(sessions, receiver, make_env, start_worker, producer):
    # Given a service sending an alert over the broker with no dedupe_key
    start_worker(make_env())
    # When the broker hands the same message over twice (redelivered after a worker died before
    # acknowledging it: same task id, same fields)
    for _ in range(2):
        producer.send_task("certctl_notify.enqueue", kwargs=alert("c-redelivered"), task_id="enqueue-redelivered-1")
    # Then one row exists and it is delivered once
    wait_for(lambda: receiver.for_key("c-redelivered"), message="delivery")
    time.sleep(0.5)  # give a wrongly duplicated row or delivery time to show up
    with sessions.begin() as s:
        assert sum(store.count_by_status(s).values()) == 1
    assert len(receiver.for_key("c-redelivered")) == 1


def intake_during_a_database_outage(key, make_env, start_worker, producer, database_proxy):
    """A worker cut off from PostgreSQL, holding the intake of alert ``key`` sent over the broker
    (trying again until it can be stored); returns (worker, proxy)."""
    proxy, proxied_url = database_proxy
    worker = start_worker(make_env(CERTCTL_DATABASE_URL=proxied_url))
    proxy.cut()
    producer.send_task("certctl_notify.enqueue", kwargs=alert(key))
    wait_for(lambda: "cannot store alert message" in worker.log(), message="the intake meeting the outage")
    return worker, proxy


def test_an_alert_sent_over_the_broker_while_the_database_is_down_waits_for_it_and_is_delivered_once(
    sessions, receiver, make_env, start_worker, producer, database_proxy
):
    # Given a worker cut off from PostgreSQL, When a service that knows only the broker URL enqueues an alert
    _worker, proxy = intake_during_a_database_outage("c-pg-intake", make_env, start_worker, producer, database_proxy)
    with sessions.begin() as s:
        assert sum(store.count_by_status(s).values()) == 0
    # Then the message is kept for later, not acknowledged as failed: once the database is back the
    # alert is stored once and delivered once
    proxy.restore()
    wait_for(lambda: receiver.for_key("c-pg-intake"), timeout=30, message="delivery after the outage")
    time.sleep(0.5)  # give a wrongly duplicated row or delivery time to show up
    assert len(receiver.for_key("c-pg-intake")) == 1
    with sessions.begin() as s:
        assert store.count_by_status(s)["sent"] == 1


@pytest.mark.parametrize(
    "kwargs, reason",
    [
        ({"channel": "Webhook", "message": "no type"}, "type is required"),
        ({"type": "ExpirationWarning", "channel": "Fax", "message": "x"}, "channel 'Fax' is not one of"),
    ],
)
def test_malformed_enqueue_message_is_refused_with_a_reason_and_the_worker_keeps_running(
    sessions, receiver, make_env, start_worker, producer, kwargs, reason
):
    # Given a running worker
    worker = start_worker(make_env())
    # When a malformed enqueue message arrives
    producer.send_task("certctl_notify.enqueue", kwargs=kwargs)
    # Then it is refused with the reason in the log and nothing is created
    wait_for(lambda: reason in worker.log(), message="the refusal in the worker log")
    with sessions.begin() as s:
        assert sum(store.count_by_status(s).values()) == 0
    # And the worker still delivers the next good alert
    [ok] = intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert("c-after-bad"))
    wait_for(lambda: row_of(sessions, ok.row.id).status == "sent", message="delivery after a bad message")
    assert worker.proc.poll() is None


def test_an_intake_held_by_a_killed_worker_is_stored_after_the_consumer_timeout_not_the_visibility_timeout(
    sessions, receiver, make_env, start_worker, producer, database_proxy, broker_url
):
    # Given a worker holding an alert's intake message that it cannot store yet (its database is cut
    # off), with the visibility timeout left at its default and the intake consumer timeout at 3 s
    # (30 s by default: tests/core/test_environment.py)
    env = {"CERTCTL_INTAKE_CONSUMER_TIMEOUT": "3s"}
    proxy, proxied_url = database_proxy
    worker = start_worker(make_env(CERTCTL_DATABASE_URL=proxied_url, **env))
    proxy.cut()
    producer.send_task("certctl_notify.enqueue", kwargs=alert("c-held-intake"))
    wait_for(lambda: "cannot store alert message" in worker.log(), message="the intake meeting the outage")
    # When that worker is killed (nothing it holds is given back) and another one runs
    worker.kill()
    killed = time.monotonic()
    assert visibility_timeout(load_settings(make_env(**env))) > 30
    start_worker(make_env(**env))
    # Then the alert is stored and delivered once within the consumer timeout and one look of the new
    # worker's relay (half a second here), long before any visibility timeout
    wait_for(lambda: receiver.for_key("c-held-intake"), timeout=30, interval=0.2,
             message="the held intake to come back")
    assert time.monotonic() - killed <= 3 + 10
    time.sleep(0.5)  # give a wrongly duplicated row or delivery time to show up
    assert len(receiver.for_key("c-held-intake")) == 1
    with sessions.begin() as s:
        assert sum(store.count_by_status(s).values()) == 1
    assert redis.Redis.from_url(broker_url).hlen("unacked") == 0
