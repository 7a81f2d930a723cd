"""``GET /metrics`` in process, against the real test database and Redis: it parses, its gauges are the
database's numbers, a source that cannot be read is left out (never reported as zero), and the
compose file gives API and worker one shared metrics directory."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
import yaml
from prometheus_client.parser import text_string_to_metric_families

from api.app import create_app
from certctl_notify import store
from certctl_notify.environment import load_settings
from certctl_notify.model import events

ADMIN = {"Authorization": "Bearer admin-key"}
READ = {"Authorization": "Bearer read-key"}
ROOT = Path(__file__).resolve().parents[2]


def scrape(http, headers=None) -> dict[tuple[str, frozenset], float]:
    """Every sample of one scrape, keyed by (sample name, labels)."""
    response = http.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.text
    assert response.content_type.startswith("text/plain")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.text) for s in family.samples}


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def names(samples) -> set[str]:
    return {name for name, _ in samples}


def add_rows(sessions, count: int, status: str, **values) -> list[str]:
    now = datetime.now(UTC)
    rows = [{"id": f"notif_{uuid.uuid4().hex}", "type": "RenewalFailure", "channel": "Webhook", "recipient": "",
             "message": "m", "status": status, "retry_count": 0, "created_at": now, "updated_at": now,
             "dispatched_at": now, **values} for _ in range(count)]
    with sessions.begin() as s:
        s.execute(events.insert(), rows)
    return [r["id"] for r in rows]


def dead_in_database(sessions) -> int:
    with sessions.begin() as s:
        return store.count_by_status(s)["dead"]


DATABASE_SERIES = {"certctl_notifications", "certctl_notification_dead_total",
                   "certctl_notification_oldest_pending_seconds", "certctl_notification_retries_due"}


def test_gauges_are_the_database_counts_before_and_after_a_requeue(settings, sessions, broker_url):
    http = create_app(settings).test_client()
    # Given rows in every status, two of them dead and one pending for a minute
    dead = add_rows(sessions, 2, "dead", retry_count=5)
    add_rows(sessions, 3, "sent")
    add_rows(sessions, 1, "failed", retry_count=1, next_retry_at=datetime.now(UTC) - timedelta(seconds=5))
    add_rows(sessions, 1, "pending", created_at=datetime.now(UTC) - timedelta(minutes=1))
    redis.Redis.from_url(broker_url).rpush("celery", b"x", b"y")
    # When Prometheus scrapes
    before = scrape(http)
    # Then each gauge is the database's number, and each queue's length is the broker's
    assert {s: value(before, "certctl_notifications", status=s) for s in ("pending", "sent", "failed", "dead",
            "read")} == {"pending": 1, "sent": 3, "failed": 1, "dead": 2, "read": 0}
    assert value(before, "certctl_notification_dead_total") == dead_in_database(sessions) == 2
    assert value(before, "certctl_notification_retries_due") == 1
    assert 60 <= value(before, "certctl_notification_oldest_pending_seconds") < 70
    assert value(before, "certctl_celery_queue_length", queue="celery") == 2
    assert value(before, "certctl_celery_queue_length", queue="certctl.deliver") == 0
    # When an operator requeues one dead row
    assert http.post(f"/api/v1/notifications/{dead[0]}/requeue", headers=ADMIN).status_code == 200
    after = scrape(http)
    # Then the dead gauge still equals the database, and the requeue is counted
    assert value(after, "certctl_notifications", status="dead") == dead_in_database(sessions) == 1
    assert value(after, "certctl_notification_dead_total") == 1
    assert value(after, "certctl_notification_requeues_total", mode="single") == 1
    assert value(after, "certctl_notification_requeues_total", mode="bulk") == 0
    assert value(after, "certctl_celery_queue_length", queue="certctl.deliver") == 1


def test_an_unreachable_database_leaves_its_gauges_out_and_counts_the_error(make_env):
    # Given an API whose database does not answer
    settings = load_settings(make_env(CERTCTL_DATABASE_URL="postgresql+psycopg2://postgres@127.0.0.1:1/x"))
    http = create_app(settings).test_client()
    # When Prometheus scrapes twice
    first, second = scrape(http), scrape(http)
    # Then no database series is reported at all (never a zero), and each failed read is counted
    assert not DATABASE_SERIES & names(first) and not DATABASE_SERIES & names(second)
    assert value(first, "certctl_metrics_collect_errors_total", source="database") == 1
    assert value(second, "certctl_metrics_collect_errors_total", source="database") == 2
    # And the rest of the scrape is still there
    assert value(second, "certctl_celery_queue_length", queue="celery") == 0
    assert value(second, "certctl_metrics_collect_errors_total", source="broker") == 0


def test_an_unreachable_broker_leaves_the_queue_lengths_out(make_env, sessions):
    settings = load_settings(make_env(CERTCTL_BROKER_URL="redis://127.0.0.1:1/0"))
    samples = scrape(create_app(settings).test_client())
    assert "certctl_celery_queue_length" not in names(samples)
    assert value(samples, "certctl_metrics_collect_errors_total", source="broker") == 1
    assert value(samples, "certctl_notifications", status="dead") == 0  # a real zero: the read worked


def test_the_embedded_broker_has_no_queue_lengths_and_no_error(make_env, sessions, tmp_path):
    settings = load_settings(make_env(CERTCTL_BROKER_URL=f"sqla+sqlite:///{tmp_path / 'broker.sqlite'}"))
    samples = scrape(create_app(settings).test_client())
    assert "certctl_celery_queue_length" not in names(samples)
    assert value(samples, "certctl_metrics_collect_errors_total", source="broker") == 0


def test_metrics_need_a_read_key_only_when_configured(make_env, sessions):
    assert create_app(load_settings(make_env())).test_client().get("/metrics").status_code == 200
    http = create_app(load_settings(make_env(CERTCTL_METRICS_AUTH="true"))).test_client()
    assert http.get("/metrics").status_code == 401
    assert "certctl_notifications" in names(scrape(http, READ))


def test_compose_gives_api_and_worker_one_metrics_directory_and_the_gunicorn_hooks():
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    for name in ("api", "worker"):
        directory = services[name]["environment"]["CERTCTL_METRICS_DIR"]
        assert f"metrics:{directory}" in services[name]["volumes"], name
    assert services["api"]["environment"]["CERTCTL_DATABASE_URL"]  # the shared environment is kept
    command = services["api"]["command"]
    assert command[command.index("--config") + 1] == "python:api.gunicorn_conf"
