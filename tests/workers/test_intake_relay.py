"""Intake over Redis with real workers: nothing lost when a worker dies at any instant."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from types import SimpleNamespace

import pytest
import redis
from kombu import Connection
from sqlalchemy import select

from bench.chaos import ForkServer
from certctl_notify import intake, store
from certctl_notify.environment import load_settings
from certctl_notify.model import events
from certctl_notify.publish import DELIVER_TASK, ENQUEUE_TASK, INTAKE_QUEUE, CeleryDispatcher, make_producer
from tests.conftest import wait_for
from tests.support.rows import row_of
from workers.factory import make_celery
from workers.intake_queue import CONSUMERS_KEY, IN_PROGRESS_PREFIX
from workers.intake_relay import IntakeStep

#: How many publish-then-SIGKILL tries the kill race makes.
KILL_RACE_TRIES = 40
#: Workers started side by side per round of the kill race.
KILL_RACE_ROUND = 8


def alert(key: str) -> dict:
    return {"type": "Revocation", "channel": "Webhook", "message": f"{key} was revoked", "certificate_id": key}


def waiting_on(broker_url: str):
    """How many messages wait in the intake queue, not yet taken by a consumer."""
    if broker_url.startswith("redis"):
        client = redis.Redis.from_url(broker_url)
        return lambda: client.llen(INTAKE_QUEUE)
    channel = Connection(broker_url).default_channel
    return lambda: channel.queue_declare(INTAKE_QUEUE, passive=True).message_count


@pytest.fixture
def fork_server(tmp_path):
    """bench/worker_forkserver.py: real `celery -A workers.app worker` processes forked with Celery and
    our code imported once (~0.2 s each instead of ~1.5 s of imports); killed and stopped afterwards."""
    server = ForkServer(dict(os.environ), tmp_path / "forkserver.log").start()
    victims: list[int] = []
    yield server, victims
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    server.stop()


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_alerts_published_as_their_worker_is_killed_are_each_stored_and_delivered_once(
    broker, request, sessions, receiver, make_env, start_worker, fork_server, tmp_path
):
    # Given forty tries of: an alert published with a bare send_task to an idle worker, whose main
    # process is SIGKILLed 0-5 ms later (while it fetches or stores the alert). The tries run in rounds
    # of KILL_RACE_ROUND workers started side by side, each blocked on the queue; each takes one alert.
    # They consume only the intake queue: a delivery cut short by a kill after its request left is the
    # one documented way to send twice, and is not what this test is about.
    server, victims = fork_server
    broker_url = request.getfixturevalue("broker_url" if broker == "redis" else "rabbitmq_url")
    env = make_env(CERTCTL_BROKER_URL=broker_url, CERTCTL_INTAKE_CONSUMER_TIMEOUT="1s")
    producer = make_producer(broker_url)
    waiting = waiting_on(broker_url)
    keys = [f"race-{n}" for n in range(KILL_RACE_TRIES)]
    for first in range(0, KILL_RACE_TRIES, KILL_RACE_ROUND):
        logs = [tmp_path / f"victim{first + n}.log" for n in range(KILL_RACE_ROUND)]
        pids = [server.spawn(["celery", "-A", "workers.app", "worker", "--pool", "solo", "--queues", INTAKE_QUEUE,
                              "--loglevel", "INFO", "--without-gossip", "--without-mingle",
                              "--hostname", f"victim{first + n}-{os.getpid()}@%h"], {**os.environ, **env}, log)
                for n, log in enumerate(logs)]
        victims += pids
        for log in logs:
            wait_for(lambda log=log: log.exists() and " ready." in log.read_text(errors="replace"), timeout=60,
                     message=f"{log.name} ready")
        published = time.monotonic()
        for key in keys[first:first + KILL_RACE_ROUND]:
            producer.send_task(ENQUEUE_TASK, kwargs=alert(key))
        # the worst instant: as soon as the workers have taken the messages off the queue (within 5 ms)
        while waiting() and time.monotonic() - published < 0.005:
            time.sleep(0)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
    # When a healthy worker runs (with beat: a delivery message lost with a killed worker is the
    # sweep's, the row being stored)
    start_worker(env, beat=True)
    # Then every alert is stored once and delivered once: none lost in a dead worker's hands
    undelivered = lambda: [key for key in keys if not receiver.for_key(key)]  # noqa: E731
    deadline = time.monotonic() + 60
    while undelivered() and time.monotonic() < deadline:
        time.sleep(0.2)
    with sessions.begin() as s:
        rows = dict(s.execute(select(events.c.certificate_id, events.c.status)).all())
    assert undelivered() == [], (
        f"not delivered; rows of those: {[(k, rows.get(k)) for k in undelivered()]}; the receiver got "
        f"{len(receiver.requests)} requests, unreadable ones: "
        f"{[r.body[:200] for r in receiver.requests if r.key is None]}")
    time.sleep(1)  # give a wrongly duplicated row or delivery time to show up
    assert sorted(key for key in keys if len(receiver.for_key(key)) != 1) == []
    with sessions.begin() as s:
        assert store.count_by_status(s)["sent"] == KILL_RACE_TRIES
    assert waiting() == 0
    if broker == "redis":
        client = redis.Redis.from_url(broker_url)
        assert [k for k in client.keys(IN_PROGRESS_PREFIX + "*") if client.llen(k)] == []
    producer.close()


def test_a_worker_stopped_while_an_alert_waits_for_the_database_hands_it_back_at_once(
    sessions, receiver, make_env, start_worker, producer, database_proxy, broker_url
):
    # Given a worker cut off from PostgreSQL holding an alert it cannot store yet
    proxy, proxied_url = database_proxy
    first = start_worker(make_env(CERTCTL_DATABASE_URL=proxied_url))
    proxy.cut()
    producer.send_task(ENQUEUE_TASK, kwargs=alert("c-handed-back"))
    wait_for(lambda: "cannot store alert message" in first.log(), message="the intake meeting the outage")
    # When it is stopped cleanly (the consumer timeout left at its default, 30 s) and another worker runs
    first.stop()
    assert "gave 1 message(s) back" in first.log()
    stopped = time.monotonic()
    start_worker(make_env())
    # Then the alert is stored and delivered once by the other worker, without waiting for the timeout
    wait_for(lambda: receiver.for_key("c-handed-back"), timeout=20, message="delivery by the other worker")
    assert time.monotonic() - stopped < 20
    time.sleep(0.5)
    assert len(receiver.for_key("c-handed-back")) == 1
    assert redis.Redis.from_url(broker_url).zcard(CONSUMERS_KEY) == 1  # the stopped relay is forgotten


def test_a_delivery_an_older_version_put_on_the_intake_queue_is_forwarded_and_sent(
    sessions, receiver, make_env, start_worker, producer
):
    # Given a stored alert whose delivery message sits on the intake queue (where versions before the
    # relay published housekeeping tasks, and where any producer's default routing puts a task)
    [stored] = intake.enqueue_alert(sessions, _NoPublish(), alert("c-forwarded"))
    producer.send_task(DELIVER_TASK, args=[stored.row.id, 1], queue=INTAKE_QUEUE)
    # When a worker runs, Then the relay hands it to the delivery queue and it is sent once
    start_worker(make_env())
    wait_for(lambda: row_of(sessions, stored.row.id).status == "sent", message="the forwarded delivery")
    assert len(receiver.for_key("c-forwarded")) == 1


def test_a_housekeeping_task_an_older_version_put_on_the_intake_queue_still_runs(
    sessions, make_env, start_worker, producer
):
    # Given a requeue job's chunk published on the intake queue (as versions before the relay did)
    worker = start_worker(make_env())
    producer.send_task("certctl_notify.sweep", queue=INTAKE_QUEUE)
    # Then the worker runs it from the housekeeping queue
    wait_for(lambda: "certctl_notify.sweep" in worker.log() and "succeeded" in worker.log(),
             message="the forwarded sweep to run")


class _NoPublish(CeleryDispatcher):
    """Stores without publishing: the test publishes the delivery itself, where it wants it."""

    def __init__(self):
        """No app: nothing is published."""

    def dispatch(self, notification_id, attempt, dispatched_at=None):
        """Publishes nothing."""



def test_the_relays_threads_share_no_publisher_or_engine_with_the_pool(make_env, broker_url):
    # The pool forks a new process whenever one exits (CERTCTL_WORKER_MAX_TASKS_PER_CHILD, a time limit)
    # while the relay's threads run. When they published through the worker's own app, a fork that
    # caught one inside EventDispatcher.publish gave the child that dispatcher's mutex locked for ever:
    # in a 30,000-alert soak every pool process of both workers hung on its first retry (py-spy showed
    # them all in EventDispatcher.publish). Nothing the relay's threads lock may be what a child uses.
    app = make_celery(load_settings(make_env(CERTCTL_BROKER_URL=broker_url)))
    worker = SimpleNamespace(app=app, concurrency=1)
    step = IntakeStep(worker)
    step.start(worker)
    try:
        relay = step.relay
        assert relay.dispatcher._app is not app and relay.dispatcher._app.amqp is not app.amqp
        assert relay.sessions is not app.runtime.sessions
        assert relay.sessions.engine is not app.runtime.sessions.engine
    finally:
        step.stop(worker)
