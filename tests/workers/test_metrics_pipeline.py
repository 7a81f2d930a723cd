"""Metrics end to end: a real worker with two pool processes and the API under gunicorn with two
workers share one metrics directory; the API's ``/metrics`` must add every process up exactly."""

from __future__ import annotations

import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from certctl_notify import store
from tests.conftest import wait_for
from tests.support.api_server import GunicornProcess
from tests.support.receiver import Answer

ADMIN = {"Authorization": "Bearer admin-key"}
#: certificate id → the test receiver's answers (the last one repeats)
SCRIPT = {
    "m-ok-1": [Answer(200, delay=0.3)], "m-ok-2": [Answer(200, delay=0.3)], "m-ok-3": [Answer(200, delay=0.3)],
    "m-flaky": [503, 200],
    "m-down-1": [503], "m-down-2": [503],
    "m-refused": [400],
}


@pytest.fixture
def api(make_env, tmp_path, request):
    server = GunicornProcess(make_env(CERTCTL_METRICS_DIR=str(tmp_path / "metrics")), tmp_path / "api.log")
    yield server.start()
    server.stop()
    if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
        print(f"--- api.log ---\n{server.log()[-6000:]}")


def scrape(api) -> dict[tuple[str, frozenset], float]:
    response = httpx.get(f"{api.url}/metrics", timeout=5)
    assert response.status_code == 200, response.text
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def sample(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def family(samples, name) -> dict[frozenset, float]:
    return {labels: v for (n, labels), v in samples.items() if n == name and v}


def by_status(sessions) -> dict[str, int]:
    with sessions.begin() as s:
        return store.count_by_status(s)


def settled(sessions, ids) -> bool:
    with sessions.begin() as s:
        return all(store.get(s, i).status in ("sent", "dead") for i in ids)


def expected_counters(*, sent, retry, dead_webhook, dead_slack, exhausted, permanent, unconfigured, single, bulk):
    """The non-zero series of each counter (every other series is reported as 0)."""
    expected = {
        "certctl_notification_attempts_total": {
            ("Webhook", "sent"): sent, ("Webhook", "retry"): retry, ("Webhook", "dead"): dead_webhook,
            ("Slack", "dead"): dead_slack},
        "certctl_notification_dead_transitions_total": {
            ("Webhook", "exhausted"): exhausted, ("Webhook", "permanent"): permanent,
            ("Slack", "unconfigured"): unconfigured},
        "certctl_notification_delivery_seconds_count": {
            ("Webhook",): sent + retry + dead_webhook, ("Slack",): dead_slack},
        "certctl_notification_requeues_total": {("single",): single, ("bulk",): bulk},
        "certctl_notification_sweep_redispatched_total": {},
    }
    return {name: {labels: v for labels, v in series.items() if v} for name, series in expected.items()}


def counters(samples) -> dict[str, dict[tuple, float]]:
    order = {"certctl_notification_attempts_total": ("channel", "outcome"),
             "certctl_notification_dead_transitions_total": ("channel", "reason"),
             "certctl_notification_delivery_seconds_count": ("channel",),
             "certctl_notification_requeues_total": ("mode",),
             "certctl_notification_sweep_redispatched_total": ("reason",)}
    return {name: {tuple(dict(labels)[k] for k in keys): v for labels, v in family(samples, name).items()}
            for name, keys in order.items()}


def test_every_counter_and_gauge_adds_up_across_worker_and_api_processes(
    sessions, receiver, make_env, start_worker, api, tmp_path
):
    # Given a worker with two pool processes and a two-process API sharing one metrics directory
    for key, answers in SCRIPT.items():
        receiver.script(key, answers)
    worker = start_worker(make_env(CERTCTL_METRICS_DIR=str(tmp_path / "metrics")), concurrency=2)
    http = httpx.Client(base_url=api.url, headers=ADMIN, timeout=10)
    # When alerts are enqueued: 3 sent, 1 sent after a retry, 2 dead by exhaustion, 1 refused (400) and
    # 1 for Slack, which has no webhook URL configured
    ids = {}
    for key, channel in [*((k, "Webhook") for k in SCRIPT), ("m-slack", "Slack")]:
        response = http.post("/api/v1/notifications", json={
            "type": "ExpirationWarning", "channel": channel, "message": f"{key} expires", "certificate_id": key})
        assert response.status_code == 202, response.text
        ids[key] = response.json()["data"][0]["id"]
    wait_for(lambda: settled(sessions, ids.values()), timeout=30, message="every alert to settle")
    before = scrape(api)
    # Then every counter has exactly the expected value, summed over both pool processes
    assert counters(before) == expected_counters(sent=4, retry=9, dead_webhook=3, dead_slack=1, exhausted=2,
                                                 permanent=1, unconfigured=1, single=0, bulk=0)
    pool = {child.pid for child in worker.children()}
    written = {int(p.stem.split("_")[1]) for p in (tmp_path / "metrics").glob("worker-*/counter_*.db")}
    assert len(pool) == 2 and written == pool, (pool, written)
    # And the gauges are the database's numbers
    assert by_status(sessions) == {"pending": 0, "sent": 4, "failed": 0, "dead": 4, "read": 0}
    assert {dict(k)["status"]: v for k, v in family(before, "certctl_notifications").items()} == {"sent": 4, "dead": 4}
    assert sample(before, "certctl_notification_dead_total") == 4

    # When the receiver recovers and an operator requeues one exhausted row
    receiver.script("m-down-1", [200])
    assert http.post(f"/api/v1/notifications/{ids['m-down-1']}/requeue").status_code == 200
    during = scrape(api)
    # Then the dead gauge still equals the database while the transitions counter keeps its value
    assert sample(during, "certctl_notifications", status="dead") == by_status(sessions)["dead"] == 3
    assert sample(during, "certctl_notification_dead_total") == 3
    assert sample(during, "certctl_notification_requeues_total", mode="single") == 1

    # When a bulk requeue takes the Slack dead letter (still unconfigured) round once more
    job = http.post("/api/v1/notifications/requeue", json={"status": "dead", "channel": "Slack"})
    assert job.status_code == 202 and job.json()["matched"] == 1

    def slack_dead_again():
        with sessions.begin() as s:
            return len(store.list_attempts(s, ids["m-slack"])) == 2 and store.get(s, ids["m-slack"]).status == "dead"
    wait_for(slack_dead_again, timeout=30, message="the Slack row to go dead again")
    wait_for(lambda: settled(sessions, ids.values()), timeout=30, message="the requeued row to be sent")
    wait_for(lambda: http.get(f"/api/v1/requeue-jobs/{job.json()['job_id']}").json()["status"] == "done",
             timeout=30, message="the bulk job to finish")
    after = [scrape(api) for _ in range(6)]  # both gunicorn workers answer some of these
    # Then each scrape, whichever API process answered it, reports the same exact totals
    assert all(s == after[0] for s in after)
    final = after[0]
    assert counters(final) == expected_counters(sent=5, retry=9, dead_webhook=3, dead_slack=2, exhausted=2,
                                                permanent=1, unconfigured=2, single=1, bulk=1)
    assert sample(final, "certctl_notification_delivery_seconds_bucket", channel="Webhook", le="+Inf") == 17
    assert 0 < sample(final, "certctl_notification_delivery_seconds_sum", channel="Webhook") < 30
    assert by_status(sessions) == {"pending": 0, "sent": 5, "failed": 0, "dead": 3, "read": 0}
    assert {dict(k)["status"]: v for k, v in family(final, "certctl_notifications").items()} == {"sent": 5, "dead": 3}
    assert sample(final, "certctl_notification_dead_total") == 3
    assert sample(final, "certctl_notification_retries_due") == 0
    assert sample(final, "certctl_notification_oldest_pending_seconds") == 0
    assert sample(final, "certctl_celery_queue_length", queue="celery") == 0
    assert sample(final, "certctl_celery_queue_length", queue="certctl.deliver") == 0
    assert family(final, "certctl_metrics_collect_errors_total") == {}
    # And the dead-transitions counter never went down across the run, though the dead gauge did
    totals = [sum(family(s, "certctl_notification_dead_transitions_total").values()) for s in (before, during, final)]
    assert totals == sorted(totals) and totals[0] == 4 and totals[-1] == 5
    # And the API's processes wrote under their own host directory, beside the worker's
    assert {p.name for p in (tmp_path / "metrics").iterdir()} == {f"api-{socket.gethostname()}",
                                                                   f"worker-{socket.gethostname()}"}
