"""RabbitMQ as the broker: durable quorum queues, publisher confirms, and no message a worker holds
for a retry's wait (RabbitMQ closes the channel of a consumer holding one past its consumer_timeout)."""

from __future__ import annotations

import subprocess
import time
from urllib.parse import urlsplit

import pytest
from kombu import Connection

from certctl_notify import intake
from certctl_notify.metrics import Metrics, QueueCollector
from certctl_notify.publish import DELIVER_TASK, DELIVERY_QUEUE, QUEUES, CeleryDispatcher
from tests.conftest import wait_for
from tests.support.rows import row_of, settled

pytestmark = pytest.mark.parametrize("broker", ["rabbitmq"], indirect=True)


def alert(key: str) -> dict:
    return {"type": "ExpirationWarning", "channel": "Webhook", "message": f"{key} expires soon", "certificate_id": key}


def rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, text=True, timeout=60).stdout


def queues_of(broker_url: str, *columns: str) -> dict[str, list[str]]:
    """``rabbitmqctl list_queues`` of this test's vhost: queue name → the columns asked for."""
    vhost = urlsplit(broker_url).path.lstrip("/")
    rows = [line.split("\t") for line in rabbitmqctl("list_queues", "-p", vhost, "name", *columns).splitlines()[1:]]
    return {row[0]: row[1:] for row in rows}


def refuses(dispatcher) -> bool:
    """True once a publish is refused (a quorum queue applies a new policy a moment after it is listed)."""
    try:
        dispatcher.dispatch("notif_filler", 1)
    except Exception:  # classified: the refusal we wait for
        return True
    return False


def test_the_worker_declares_durable_quorum_queues(make_env, start_worker, broker_url):
    start_worker(make_env())
    declared = queues_of(broker_url, "type", "durable")
    assert {name: declared.get(name) for name in QUEUES} == {name: ["quorum", "true"] for name in QUEUES}


def test_a_publish_the_broker_refuses_leaves_the_row_for_the_sweep(sessions, receiver, make_env, start_worker,
                                                                   producer, broker_url, caplog):
    # Given a delivery queue that refuses every new message: full (one message, for no row) with a
    # length limit of one and overflow reject-publish
    CeleryDispatcher(producer).dispatch("notif_filler", 1)
    vhost = urlsplit(broker_url).path.lstrip("/")
    rabbitmqctl("set_policy", "-p", vhost, "--apply-to", "queues", "certctl-refuse", f"^{DELIVERY_QUEUE}$",
                '{"max-length": 1, "overflow": "reject-publish"}')
    wait_for(lambda: queues_of(broker_url, "policy")[DELIVERY_QUEUE] == ["certctl-refuse"], message="the policy")
    wait_for(lambda: refuses(CeleryDispatcher(producer)), message="the queue refusing messages")
    try:
        # When an alert is taken
        [result] = intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert("c-refused"))
        # Then the broker's refusal is seen (publisher confirms) and said; the row is kept, pending
        assert row_of(sessions, result.row.id).status == "pending"
        refusals = [r.getMessage() for r in caplog.records if "the sweep will re-dispatch it" in r.getMessage()]
        assert len(refusals) == 1 and result.row.id in refusals[0], refusals
        assert "MessageNacked" in refusals[0]
    finally:
        rabbitmqctl("clear_policy", "-p", vhost, "certctl-refuse")
    # And once the queue takes messages again, the sweep delivers it, once
    start_worker(make_env(), beat=True)
    wait_for(settled(sessions, result.row.id, "sent"), timeout=30, message="delivery by the sweep")
    assert len(receiver.for_key("c-refused")) == 1


def test_a_retry_waits_in_postgresql_with_no_message_held_by_a_worker(sessions, receiver, make_env, start_worker,
                                                                      producer, broker_url):
    # Given a first attempt that fails and a 4 s wait before the next (as a one-hour wait would)
    receiver.script("c-wait", [503, 200])
    start_worker(make_env(CERTCTL_NOTIFICATION_RETRY_BASE="4s", CERTCTL_NOTIFICATION_RETRY_CAP="4s"))
    [result] = intake.enqueue_alert(sessions, CeleryDispatcher(producer), alert("c-wait"))
    failed = wait_for(lambda: (r := row_of(sessions, result.row.id)).status == "failed" and r, message="first failure")
    # While it waits, no worker holds a message for it (nothing for consumer_timeout to cut) and none
    # is queued: the worker itself says it holds nothing, and the queue is empty (a passive declare:
    # rabbitmqctl's counts lag by up to its 5 s statistics interval)
    assert failed.next_retry_at is not None
    time.sleep(1)
    inspect = producer.control.inspect(timeout=2, limit=1)  # one worker: answer as soon as it replies
    answers = [inspect.active(), inspect.reserved(), inspect.scheduled()]
    assert all(answers), answers  # the worker answered each question
    held = [task for answer in answers for tasks in answer.values() for task in tasks
            if DELIVER_TASK in (task.get("name"), (task.get("request") or {}).get("name"))]
    assert held == []
    with Connection(broker_url) as conn:
        assert conn.default_channel.queue_declare(DELIVERY_QUEUE, passive=True).message_count == 0
    # And when it is due, beat releases it and it is sent on the second attempt
    done = wait_for(settled(sessions, result.row.id, "sent", "dead"), timeout=20, message="the retry")
    assert (done.status, done.retry_count) == ("sent", 1)
    history = receiver.for_key("c-wait")
    assert len(history) == 2


def test_queue_lengths_are_read_from_rabbitmq_for_metrics(producer, broker_url):
    # Given three deliveries waiting, no worker running
    for n in range(3):
        CeleryDispatcher(producer).dispatch(f"notif_waiting_{n}", 1)
    # Then the metric the backlog alert reads says so, per queue
    [family] = QueueCollector(broker_url, Metrics()).collect()
    lengths = {sample.labels["queue"]: sample.value for sample in family.samples}
    assert lengths == {"celery": 0, DELIVERY_QUEUE: 3, "certctl.control": 0}
