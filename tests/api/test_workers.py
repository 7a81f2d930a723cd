"""GET /api/v1/workers and `certctl-notify workers`: a real worker subprocess on the real Redis broker,
a receiver that holds a delivery, and the "unavailable" answers when nothing answers."""

from __future__ import annotations

import json
import threading
import time

import pytest
from click.testing import CliRunner
from werkzeug.serving import make_server

from api.app import create_app
from certctl_notify import intake
from certctl_notify.environment import load_settings
from certctl_notify.publish import CONTROL_QUEUE, DELIVER_TASK, DELIVERY_QUEUE, CeleryDispatcher
from cli import main
from tests.conftest import wait_for
from tests.support.receiver import Answer, RawPeer

READ = {"Authorization": "Bearer read-key"}
#: Room for a delivery held 8 s by the receiver, and a 1 s wait for workers' replies (the default).
SLOW = {"CERTCTL_INSPECT_TIMEOUT": "1s", "CERTCTL_HTTP_TIMEOUT": "15s", "CERTCTL_TASK_TIME_LIMIT": "20s",
        "CERTCTL_CLAIM_LEASE": "30s"}
WORKER_KEYS = {"name", "online", "pid", "uptime_seconds", "pool", "processed", "active", "reserved", "scheduled"}


@pytest.fixture
def view(make_env, sessions):
    """``view(**env)`` → the JSON of GET /api/v1/workers from an app built on this test's services."""
    apps = {}

    def get(**overrides):
        key = tuple(sorted(overrides.items()))
        if key not in apps:
            apps[key] = create_app(load_settings(make_env(**overrides))).test_client()
        response = apps[key].get("/api/v1/workers", headers=READ)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.json

    return get


def timed(call):
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def test_a_running_worker_shows_its_active_delivery_and_its_held_and_waiting_tasks(
    sessions, receiver, make_env, start_worker, producer, view
):
    # Given a worker with one pool process
    start_worker(make_env(**SLOW), concurrency=1)
    # And a delivery it holds for a later ETA (a retry's countdown)
    producer.send_task(DELIVER_TASK, args=["notif_held", 2], countdown=5, queue=DELIVERY_QUEUE)
    first = wait_for(lambda: (v := view(**SLOW))["status"] == "ok" and v["workers"][0]["scheduled"] == 1 and v,
                     message="the held task in the view")
    # When an alert goes to a receiver that takes 8 s to answer
    receiver.script("c-slow", [Answer(200, delay=8)])
    row = intake.enqueue_alert(sessions, CeleryDispatcher(producer), {
        "type": "ExpirationWarning", "channel": "Webhook", "message": "cert c-slow expires", "certificate_id": "c-slow",
    })[0].row

    def active_delivery():
        v = view(**SLOW)
        return v if v["workers"] and v["workers"][0]["active"] else None

    during = wait_for(active_delivery, message="the active delivery in the view")
    # Then the view shows the worker, its pool, the delivery it runs (notification, attempt, runtime so far)
    assert during["status"] == "ok" and during["reason"] is None
    (worker,) = during["workers"]
    assert set(worker) == WORKER_KEYS
    assert worker["name"].startswith("test-") and worker["online"] is True
    assert worker["pool"] == {"kind": "prefork", "size": 1}
    assert first["workers"][0]["processed"] == 0 and worker["processed"] == 1  # started ones count
    (task,) = worker["active"]
    assert task["task"] == DELIVER_TASK and task["notification_id"] == row.id and task["attempt"] == 1
    assert 0 <= task["runtime_seconds"] < 8
    # And the held retry as scheduled, nothing reserved, nothing left waiting in the queues
    assert worker["scheduled"] == 1 and worker["reserved"] == 0
    assert during["queues"] == {"celery": 0, DELIVERY_QUEUE: 0, CONTROL_QUEUE: 0}
    # When the held task falls due while the only pool process is still busy
    later = wait_for(lambda: (v := view(**SLOW))["workers"][0]["reserved"] == 1 and v, timeout=15,
                     message="the due task waiting for the busy pool")
    # Then it is reserved (received, waiting for a process), no longer scheduled, and the delivery ran on
    (worker,) = later["workers"]
    assert worker["scheduled"] == 0
    assert worker["active"][0]["notification_id"] == row.id
    assert worker["active"][0]["runtime_seconds"] > task["runtime_seconds"]
    # And once both have run, the processed count says so
    wait_for(lambda: view(**SLOW)["workers"][0]["processed"] == 2, timeout=20, message="two tasks processed")


def test_with_no_worker_running_it_answers_unavailable_quickly(view, broker_url, producer):
    # Given a broker with no worker, and work waiting in a queue
    producer.send_task(DELIVER_TASK, args=["notif_waiting", 1], queue=DELIVERY_QUEUE)
    # When the view is asked, with the default 1 s wait for replies
    body, seconds = timed(lambda: view(CERTCTL_INSPECT_TIMEOUT="1s"))
    # Then it says so within the wait, still a 200, with the queue depths it could read
    assert seconds < 3, seconds
    assert body["status"] == "unavailable" and body["workers"] == []
    assert body["reason"] == "no worker answered within 1 s"
    assert body["queues"] == {"celery": 0, DELIVERY_QUEUE: 1, CONTROL_QUEUE: 0}


def test_with_the_broker_down_it_answers_unavailable_at_once(view):
    body, seconds = timed(lambda: view(CERTCTL_BROKER_URL="redis://127.0.0.1:1/0"))
    assert seconds < 3, seconds
    assert body["status"] == "unavailable" and body["workers"] == [] and body["queues"] is None
    assert body["reason"].startswith("broker unavailable")


def test_a_broker_that_accepts_and_never_answers_does_not_hang_the_view(view):
    # Given a "Redis" that accepts connections and then says nothing
    def hold(conn):
        while conn.recv(65536):
            pass

    peer = RawPeer(hold).start()
    try:
        body, seconds = timed(lambda: view(CERTCTL_BROKER_URL=f"redis://127.0.0.1:{peer.port}/0"))
    finally:
        peer.stop()
    # Then the view gives up after about twice the wait, and says why
    assert seconds < 5, seconds
    assert body["status"] == "unavailable" and body["reason"].startswith("broker unavailable")


def test_the_view_needs_a_key(make_env, sessions):
    response = create_app(load_settings(make_env())).test_client().get("/api/v1/workers")
    assert response.status_code == 401 and response.json["error"] == "unauthorized"


@pytest.fixture
def api_url(make_env, sessions):
    server = make_server("127.0.0.1", 0, create_app(load_settings(make_env(**SLOW))), threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def cli(api_url, *args):
    return CliRunner().invoke(main, ["workers", "--url", api_url, "--key", "read-key", *args])


def test_the_cli_prints_the_same_view_as_json_and_as_a_table(api_url, make_env, start_worker, view):
    # Given a running worker
    worker = start_worker(make_env(**SLOW), concurrency=2)
    # When the command runs with --json
    result = cli(api_url, "--json")
    # Then it prints the API's view: same keys, the worker with its pool
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert set(printed) == set(view(**SLOW))
    (shown,) = printed["workers"]
    assert set(shown) == WORKER_KEYS and shown["pool"] == {"kind": "prefork", "size": 2}
    # And as a table: one line per worker, then the queue depths
    table = cli(api_url)
    assert table.exit_code == 0, table.output
    assert shown["name"] in table.output and "prefork/2" in table.output
    assert "queues: celery 0, certctl.control 0, certctl.deliver 0" in table.output
    # When no worker runs any more, both forms say "unavailable" and exit 1
    worker.stop()
    result = cli(api_url, "--json")
    assert result.exit_code == 1 and json.loads(result.output)["status"] == "unavailable"
    table = cli(api_url)
    assert table.exit_code == 1 and "workers unavailable: no worker answered within 1 s" in table.output


class FakeInspect:
    """Canned replies of two workers: w1 answers everything, w2 answers stats and errors for the rest."""

    def __init__(self, destination=None, **kwargs):
        self.destination = destination

    def stats(self):
        pool = {"implementation": "celery.concurrency.threads:TaskPool", "max-concurrency": 8}
        return {"w1@h": {"pid": 7, "uptime": 60, "pool": pool, "total": {DELIVER_TASK: 3, "certctl_notify.sweep": 2}},
                "w2@h": {"pool": {}, "total": {}}, "bad@h": "not a dict"}

    def active(self):
        started = time.time() - 2
        delivery = {"id": "t1", "name": DELIVER_TASK, "args": [], "kwargs": {"notification_id": "n1", "attempt": 3},
                    "time_start": started, "worker_pid": 11}
        return {"w1@h": [delivery,
                         {"id": "t2", "name": "certctl_notify.sweep", "args": [], "time_start": None}],
                "w2@h": {"error": "no such command"}}

    def reserved(self):
        return {"w1@h": [{}, {}]}

    def scheduled(self):
        return {"w1@h": [{}]}


class FakeApp:
    class control:
        inspect = FakeInspect

    def connection_for_write(self, **kwargs):
        from kombu import Connection

        return Connection("memory://")


def test_replies_are_shaped_and_partial_answers_become_null():
    from api.inspector import workers_view

    body = workers_view(FakeApp(), timeout=0.2)
    assert body["status"] == "ok" and body["queues"] is None  # not a Redis broker
    w1, w2 = body["workers"]
    assert w1["pool"] == {"kind": "threads", "size": 8} and w1["processed"] == 5
    delivery, sweep = w1["active"]
    assert (delivery["notification_id"], delivery["attempt"], delivery["worker_pid"]) == ("n1", 3, 11)
    assert 1.5 < delivery["runtime_seconds"] < 10
    assert sweep == {"task_id": "t2", "task": "certctl_notify.sweep", "notification_id": None, "attempt": None,
                     "runtime_seconds": None, "worker_pid": None}
    assert (w1["reserved"], w1["scheduled"]) == (2, 1)
    assert w2["name"] == "w2@h" and w2["pool"] == {"kind": None, "size": None}
    assert (w2["active"], w2["reserved"], w2["scheduled"], w2["processed"]) == (None, None, None, 0)
