"""The reliable fetch of the intake queue on a real Redis, and the kombu message layout it relies on."""

from __future__ import annotations

import json

import pytest
import redis
from celery import Celery
from kombu.transport import redis as kombu_redis

from certctl_notify.publish import ENQUEUE_TASK, INTAKE_QUEUE
from workers.intake_queue import (
    CONSUMERS_KEY,
    PRIORITY_SEPARATOR,
    PRIORITY_STEPS,
    IntakeQueue,
    MalformedMessage,
    decode,
    readdressed,
)


@pytest.fixture
def client(broker_url):
    c = redis.Redis.from_url(broker_url)
    yield c
    c.close()


@pytest.fixture
def bare_producer(broker_url):
    """What a service holding only the broker URL uses: a Celery app with every default."""
    app = Celery("someone-else", broker=broker_url, set_as_current=False)
    yield app
    app.close()


def relay(client, name: str) -> IntakeQueue:
    return IntakeQueue(client, INTAKE_QUEUE, name)


# --- what we rely on in kombu and Celery (fails loudly when an upgrade changes it) -----------------


def test_kombu_lays_out_priorities_as_the_relay_reads_them():
    assert kombu_redis.Channel.sep == PRIORITY_SEPARATOR
    assert tuple(kombu_redis.Channel.priority_steps) == PRIORITY_STEPS
    assert kombu_redis.Channel.default_priority == 0


def test_a_bare_producers_messages_are_read_oldest_first_in_kombus_priority_order(client, bare_producer):
    # Given alerts sent with send_task by a producer with Celery's defaults, two with a priority
    # (on kombu's Redis transport 0, the default, is the highest; 5 rounds down to step 3, 9 is step 9)
    def send(name: str, **options):
        return bare_producer.send_task(ENQUEUE_TASK, kwargs={"type": "ExpirationWarning", "certificate_id": name},
                                       **options)

    low, mid, first, second = send("low", priority=9), send("mid", priority=5), send("first"), send("second")
    queue = relay(client, "r1")
    # When the relay fetches them, Then it reads task, id and fields: the default ones in the order
    # they were sent, then by priority, as Celery's own consumer would
    fetched = [decode(queue.fetch(0.1)) for _ in range(4)]
    assert [(m.task, m.id, m.args, m.kwargs["certificate_id"]) for m in fetched] == [
        (ENQUEUE_TASK, first.id, [], "first"), (ENQUEUE_TASK, second.id, [], "second"),
        (ENQUEUE_TASK, mid.id, [], "mid"), (ENQUEUE_TASK, low.id, [], "low")]
    assert queue.fetch(0.1) is None


def test_a_protocol_1_message_of_an_old_producer_is_read(client, broker_url):
    old = Celery("old-producer", broker=broker_url, set_as_current=False)
    old.conf.task_protocol = 1
    sent = old.send_task(ENQUEUE_TASK, kwargs={"type": "ExpirationWarning", "certificate_id": "old"})
    old.close()
    message = decode(relay(client, "r1").fetch(0.1))
    assert (message.task, message.id, message.kwargs["certificate_id"]) == (ENQUEUE_TASK, sent.id, "old")


@pytest.mark.parametrize("raw", [b"not json", b"{}", json.dumps({"body": "!!", "headers": {}}).encode(),
                                 json.dumps({"body": "W10=", "content-type": "application/x-python-serialize",
                                             "properties": {"body_encoding": "base64"}}).encode()])
def test_what_is_not_a_json_celery_message_is_refused_by_name(raw):
    with pytest.raises(MalformedMessage):
        decode(raw)


def test_a_readdressed_message_names_its_new_queue_for_kombus_redelivery(client, bare_producer):
    bare_producer.send_task("certctl_notify.sweep")
    raw = client.lindex(INTAKE_QUEUE, 0)
    moved = json.loads(readdressed(raw, "certctl.control"))
    assert moved["properties"]["delivery_info"] == {"exchange": "", "routing_key": "certctl.control"}
    assert moved["body"] == json.loads(raw)["body"]


# --- the fetch: moved, never popped ---------------------------------------------------------------


def test_a_fetched_message_stays_on_redis_until_it_is_finished(client, bare_producer):
    bare_producer.send_task(ENQUEUE_TASK, kwargs={"type": "ExpirationWarning"})
    queue = relay(client, "r1")
    raw = queue.fetch(0.1)
    assert client.llen(INTAKE_QUEUE) == 0
    assert client.lrange(queue.in_progress, 0, -1) == [raw]
    queue.finish(raw)
    assert client.llen(queue.in_progress) == 0


def test_a_silent_relays_messages_are_taken_back_once_and_a_live_relays_are_not(client, bare_producer):
    # Given two relays that each fetched one message and stamped themselves alive
    for n in range(2):
        bare_producer.send_task(ENQUEUE_TASK, kwargs={"type": "ExpirationWarning", "certificate_id": f"c{n}"})
    dead, live = relay(client, "dead"), relay(client, "live")
    dead.beat()
    live.beat()
    held_by_dead, held_by_live = dead.fetch(0.1), live.fetch(0.1)
    # When only the live one keeps stamping itself and another relay looks for silent ones
    client.zadd(CONSUMERS_KEY, {"dead": 0})  # last heard of long ago
    live.beat()
    observer = relay(client, "observer")
    # Then the dead relay's message is back at the head of the queue (handled next), exactly once
    assert observer.reclaim(silent_for=10) == 1
    assert observer.reclaim(silent_for=10) == 0
    assert client.lrange(INTAKE_QUEUE, 0, -1) == [held_by_dead]
    assert client.llen(dead.in_progress) == 0
    assert client.zscore(CONSUMERS_KEY, "dead") is None
    # and the live relay keeps its own
    assert client.lrange(live.in_progress, 0, -1) == [held_by_live]


def test_a_relay_that_stops_gives_its_messages_back_at_once(client, bare_producer):
    bare_producer.send_task(ENQUEUE_TASK, kwargs={"type": "ExpirationWarning"})
    queue = relay(client, "stopping")
    queue.beat()
    raw = queue.fetch(0.1)
    assert queue.give_back() == 1
    assert client.lrange(INTAKE_QUEUE, 0, -1) == [raw]
    assert client.zscore(CONSUMERS_KEY, "stopping") is None


def test_a_forwarded_message_leaves_the_in_progress_list_in_the_same_step(client, bare_producer):
    bare_producer.send_task("certctl_notify.sweep")
    queue = relay(client, "r1")
    raw = queue.fetch(0.1)
    queue.forward(raw, "certctl.control")
    assert client.llen(queue.in_progress) == 0
    assert decode(client.lindex("certctl.control", 0)).task == "certctl_notify.sweep"
