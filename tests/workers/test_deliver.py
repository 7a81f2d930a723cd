"""The delivery spine end to end: real PostgreSQL, real Redis broker, a real worker subprocess, a real
HTTP receiver, and the real backoff schedule compressed to a 50 ms base."""

from __future__ import annotations

import re

import pytest
from standardwebhooks import Webhook

from certctl_notify import intake, operations, store
from certctl_notify.errors import WrongState
from certctl_notify.publish import CeleryDispatcher
from tests.conftest import BROKERS, COMPRESSED, wait_for
from tests.support.receiver import Answer
from tests.support.rows import attempts_of, row_of, settled

BASE = 0.05  # seconds; the compressed CERTCTL_NOTIFICATION_RETRY_BASE

#: The spine's end-to-end tests run on Redis and on RabbitMQ; the others (log lines, headers, Retry-After
#: arithmetic) do not depend on the broker and run on Redis.
on_both_brokers = pytest.mark.parametrize("broker", BROKERS, indirect=True)


@pytest.fixture
def enqueue(sessions, producer):
    dispatcher = CeleryDispatcher(producer)

    def enqueue(key: str, **fields):
        fields = {"type": "ExpirationWarning", "channel": "Webhook", "message": f"cert {key} expires soon",
                  "certificate_id": key, **fields}
        return intake.enqueue_alert(sessions, dispatcher, fields)[0].row

    return enqueue


@on_both_brokers
def test_delivered_on_fifth_attempt_after_four_failures_with_growing_waits(
    sessions, receiver, make_env, start_worker, enqueue
):
    # Given a receiver that fails four times, then accepts
    receiver.script("c-five", [503, 503, 503, 503, 200])
    start_worker(make_env())
    # When an alert is enqueued
    row = enqueue("c-five")
    # Then it is delivered on attempt 5, with retry_count 4 telling how many attempts failed
    done = wait_for(settled(sessions, row.id, "sent", "dead"), message="delivery")
    assert done.status == "sent"
    assert done.retry_count == 4
    assert done.sent_at is not None and done.next_retry_at is None and done.last_error is None
    history = attempts_of(sessions, row.id)
    assert [a.attempt for a in history] == [1, 2, 3, 4, 5]
    assert [a.outcome for a in history] == ["retry"] * 4 + ["sent"]
    assert [a.status_code for a in history] == [503] * 4 + [200]
    # And the waits between attempts follow base·1, 2, 4, 8: never shorter, and not much longer
    waits = [(b.started_at - a.finished_at).total_seconds() for a, b in zip(history, history[1:], strict=False)]
    for wait, expected in zip(waits, [BASE * 2**k for k in range(4)], strict=True):
        assert expected - 0.005 <= wait <= expected + 0.5, (waits, expected)
    assert len(receiver.for_key("c-five")) == 5


@on_both_brokers
def test_always_failing_receiver_goes_dead_after_exactly_five_attempts(sessions, receiver, make_env, start_worker,
                                                                       enqueue):
    # Given a receiver that always answers 503
    receiver.script("c-dead", [Answer(503, body=b"upstream down")])
    start_worker(make_env())
    # When an alert is enqueued
    row = enqueue("c-dead")
    # Then it is dead after exactly five attempts, says why, and was never marked sent
    done = wait_for(settled(sessions, row.id, "dead", "sent"), message="dead letter")
    assert done.status == "dead"
    assert done.retry_count == 5
    assert done.next_retry_at is None
    assert done.sent_at is None
    assert "HTTP 503" in done.last_error and "upstream down" in done.last_error
    history = attempts_of(sessions, row.id)
    assert [a.outcome for a in history] == ["retry"] * 4 + ["dead"]
    assert len(receiver.for_key("c-dead")) == 5


@pytest.mark.parametrize("status", [400, 401])
def test_permanent_answer_goes_dead_after_one_attempt(sessions, receiver, make_env, start_worker, enqueue, status):
    # Given a receiver that refuses the request
    receiver.script(f"c-{status}", [status])
    start_worker(make_env())
    # When an alert is enqueued
    row = enqueue(f"c-{status}")
    # Then it is dead after one attempt, with the reason, and nothing was retried
    done = wait_for(settled(sessions, row.id, "dead", "sent"), message="dead letter")
    assert (done.status, done.retry_count) == ("dead", 1)
    assert f"HTTP {status}" in done.last_error
    [only] = attempts_of(sessions, row.id)
    assert (only.outcome, only.error_class) == ("dead", "permanent")
    assert len(receiver.for_key(f"c-{status}")) == 1


def test_the_dead_letter_log_line_says_how_long_the_attempt_took(sessions, receiver, make_env, start_worker,
                                                                   enqueue):
    # Given a receiver that takes 0.5 s to refuse the request for good
    receiver.script("c-slow-410", [Answer(410, delay=0.5)])
    worker = start_worker(make_env())
    row = enqueue("c-slow-410")
    wait_for(settled(sessions, row.id, "dead", "sent"), message="dead letter")
    # Then the worker's line for that attempt times the whole attempt, as the attempt record does
    line = wait_for(lambda: re.search(rf"{row.id} attempt 1/5 via Webhook: dead after (\d+) ms", worker.log()),
                    message="the attempt's log line")
    [only] = attempts_of(sessions, row.id)
    assert int(line.group(1)) >= 500 and only.duration_ms >= 500



def test_the_attempt_log_lines_say_what_happened_and_what_comes_next(sessions, receiver, make_env, start_worker,
                                                                       enqueue):
    # Given a budget of two attempts, a receiver that always answers 503 and one that accepts
    receiver.script("c-log-503", [Answer(503, body=b"upstream down")])
    receiver.script("c-log-200", [200])
    worker = start_worker(make_env(CERTCTL_NOTIFICATION_MAX_ATTEMPTS="2"))
    # When an alert to each is enqueued and settles
    failing, healthy = enqueue("c-log-503"), enqueue("c-log-200")
    wait_for(settled(sessions, failing.id, "dead", "sent"), message="dead letter")
    wait_for(settled(sessions, healthy.id, "sent", "dead"), message="delivery")

    def line(pattern: str) -> re.Match:
        return wait_for(lambda: re.search(pattern, worker.log(), flags=re.MULTILINE), message=pattern)

    # Then the failed attempt tells its duration, status and error, and when the next attempt comes (base 50 ms)
    line(rf"{failing.id} attempt 1/2 via Webhook: failed after \d+ ms \(HTTP 503\): HTTP 503 from [^;\n]*"
         r"upstream down[^;\n]*; attempt 2/2 in 0\.05s$")
    # And the last attempt says it was the end
    line(rf"{failing.id} attempt 2/2 via Webhook: dead after \d+ ms \(HTTP 503\): HTTP 503 from [^;\n]*"
         r"upstream down[^;\n]*; no retry$")
    # And a delivery says only that it was sent, how fast, and the answer
    line(rf"{healthy.id} attempt 1/2 via Webhook: sent after \d+ ms \(HTTP 200\)$")

@on_both_brokers
def test_retry_after_is_honoured_but_capped(sessions, receiver, make_env, start_worker, enqueue):
    # Given a receiver that answers 429 asking for 1 s (longer than the 50 ms backoff), then 200
    receiver.script("c-429", [Answer(429, headers={"Retry-After": "1"}), 200])
    start_worker(make_env(CERTCTL_NOTIFICATION_RETRY_CAP="3s"))
    row = enqueue("c-429")
    done = wait_for(settled(sessions, row.id, "sent", "dead"), message="delivery")
    # Then the second attempt waited at least the second asked for
    first, second = receiver.for_key("c-429")
    assert done.status == "sent" and done.retry_count == 1
    assert second.at - first.at >= 1.0


def test_retry_after_longer_than_the_cap_waits_only_the_cap(sessions, receiver, make_env, start_worker, enqueue):
    # Given a receiver asking for an hour, with the cap at 1 s
    receiver.script("c-429-cap", [Answer(503, headers={"Retry-After": "3600"}), 200])
    start_worker(make_env())
    row = enqueue("c-429-cap")
    done = wait_for(settled(sessions, row.id, "sent", "dead"), timeout=10, message="delivery")
    first, second = receiver.for_key("c-429-cap")
    assert done.status == "sent"
    assert 1.0 <= second.at - first.at < 3.0


def test_every_webhook_is_signed_with_a_stable_id(sessions, receiver, make_env, start_worker, enqueue):
    # Given a receiver that fails twice
    receiver.script("c-sig", [500, 500, 200])
    start_worker(make_env())
    row = enqueue("c-sig")
    wait_for(settled(sessions, row.id, "sent"), message="delivery")
    # Then every attempt verifies with the standardwebhooks library and carries the same webhook-id
    verifier = Webhook(COMPRESSED["CERTCTL_WEBHOOK_SECRET"])
    got = receiver.for_key("c-sig")
    assert len(got) == 3
    for request in got:
        assert verifier.verify(request.body, request.headers)["data"]["id"] == row.id
    assert {r.headers["webhook-id"] for r in got} == {row.id}


@on_both_brokers
def test_requeue_of_a_dead_row_delivers_it_once_the_receiver_is_healthy(
    sessions, receiver, make_env, start_worker, enqueue, producer
):
    # Given a dead row (the receiver was down for the whole budget)
    receiver.script("c-requeue", [503])
    start_worker(make_env())
    row = enqueue("c-requeue")
    wait_for(settled(sessions, row.id, "dead"), message="dead letter")
    # When the receiver recovers and the operator requeues
    receiver.script("c-requeue", [200])
    reset = operations.requeue(sessions, CeleryDispatcher(producer), row.id)
    assert (reset.status, reset.retry_count, reset.next_retry_at, reset.last_error) == ("pending", 0, None, None)
    # Then it is delivered on the first attempt of its new budget
    done = wait_for(settled(sessions, row.id, "sent"), message="delivery after requeue")
    assert done.retry_count == 0
    assert len(receiver.for_key("c-requeue")) == 6
    # And requeueing the delivered row is refused and changes nothing
    with pytest.raises(WrongState):
        operations.requeue(sessions, CeleryDispatcher(producer), row.id)
    assert row_of(sessions, row.id).status == "sent"
    assert len(receiver.for_key("c-requeue")) == 6


@on_both_brokers
def test_the_same_message_published_three_times_sends_each_attempt_once(
    sessions, receiver, make_env, start_worker, producer
):
    # Given a pending row whose first message is published three times at once (same task id)
    receiver.script("c-dup", [Answer(503, delay=0.3), Answer(200, delay=0.3)])
    with sessions.begin() as s:
        row = store.insert_notification(s, {
            "id": "notif_dup", "type": "RenewalFailure", "channel": "Webhook", "recipient": "", "message": "x",
            "certificate_id": "c-dup", "status": "pending", "retry_count": 0,
        })
    for _ in range(3):
        producer.send_task("certctl_notify.deliver", args=[row.id, 1], task_id="dup-task", queue="certctl.deliver")
    # When three worker processes race for them
    start_worker(make_env(), concurrency=3)
    done = wait_for(settled(sessions, row.id, "sent", "dead"), message="delivery")
    # Then the receiver saw exactly one request per attempt: two attempts, two requests
    assert done.status == "sent" and done.retry_count == 1
    assert len(receiver.for_key("c-dup")) == 2
    assert [a.attempt for a in attempts_of(sessions, row.id)] == [1, 2]


def test_pool_processes_replaced_after_their_task_budget_still_deliver_every_alert_once(
    sessions, receiver, make_env, start_worker, enqueue
):
    # Given a worker whose single pool process is replaced after every 2 tasks
    worker = start_worker(make_env(CERTCTL_WORKER_MAX_TASKS_PER_CHILD="2"), concurrency=1)
    pool_pids = {p.pid for p in worker.children()}
    # When 6 alerts are delivered through it, one after another
    rows = []
    for n in range(6):
        rows.append(enqueue(f"c-recycle-{n}"))
        wait_for(settled(sessions, rows[-1].id, "sent", "dead"), message="delivery")
        pool_pids.update(p.pid for p in worker.children())
    # Then every one is sent exactly once, by more than one pool process in turn
    assert {row_of(sessions, row.id).status for row in rows} == {"sent"}
    assert all(len(receiver.for_key(f"c-recycle-{n}")) == 1 for n in range(6))
    assert len(pool_pids) >= 3, pool_pids
