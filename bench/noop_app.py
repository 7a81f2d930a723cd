"""A Celery app for the no-op baseline of ``bench/throughput.py``: ``celery -A bench.noop_app worker``.

It is built exactly like ``workers.app`` — ``celery_config(load_settings())`` from the same
``CERTCTL_*`` environment, validated by ``validate_celery``, logging installed by the same
``setup_logging`` handler — but registers only ``bench.noop``. Whatever the worker spends per
``bench.noop`` is therefore Celery + broker overhead under production settings (late acks, prefetch
1, reject-on-worker-lost, task events, the same Redis), the floor a real delivery cannot go below.
"""

from __future__ import annotations

import sys

import redis
from celery import Celery, signals

from certctl_notify import logs
from certctl_notify.environment import load_settings
from certctl_notify.errors import ConfigError
from workers.config import celery_config, validate_celery

#: Name of the no-op task (published with ``send_task`` on the delivery queue).
NOOP_TASK = "bench.noop"
#: Redis key the no-op increments; lives in the broker's Redis db, which the benchmark flushes.
COUNTER_KEY = "certctl_bench:noop_done"

try:
    settings = load_settings()
except ConfigError as exc:
    sys.exit(f"bench.noop_app: refusing to start: {exc}")

app = Celery("certctl_bench_noop", set_as_current=False)
app.conf.update(celery_config(settings))
validate_celery(app.conf, settings)


def _on_setup_logging(**_):
    # The same handler workers.signals installs, so both workers log (or not) identically.
    logs.configure_logging(settings.log_format, settings.log_level)


signals.setup_logging.connect(_on_setup_logging, weak=False)

_redis: redis.Redis | None = None  # one client per pool process, created after the fork


@app.task(name=NOOP_TASK, acks_late=True, reject_on_worker_lost=True)
def noop() -> None:
    """Do nothing, but finish observably.

    One ``INCR`` on a Redis connection the process keeps open is about the cheapest completion an
    outside observer can count (one round trip to a server already in use; no result backend, no
    database), so the baseline stays a floor: a real delivery must at least be observable too.
    """
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(settings.broker_url)
    _redis.incr(COUNTER_KEY)


#: Name of the "delivery without bookkeeping" task: the same signed webhook POST, no database.
POST_TASK = "bench.post"
POST_COUNTER_KEY = "certctl_bench:post_done"
_webhook = None  # the real Webhook channel, built once per pool process


@app.task(name=POST_TASK, acks_late=True, reject_on_worker_lost=True)
def post(i: int) -> None:
    """Send what a delivery sends — the real Webhook channel (SSRF guard, signature, pooled httpx
    client, capped read, classification) — with none of the bookkeeping (no claim, no record), then
    finish observably like ``noop``. The gap between this and a notification is what the database
    bookkeeping costs; the gap between ``noop`` and this is the HTTP delivery itself."""
    global _redis, _webhook
    from datetime import UTC, datetime

    from certctl_notify.channels import build_channels
    from certctl_notify.channels.base import Notification

    if _webhook is None:
        _webhook = build_channels(settings)["Webhook"]
        _redis = redis.Redis.from_url(settings.broker_url)
    _webhook.send(Notification(
        id=f"notif_bench_{i}", type="ExpirationWarning", channel="Webhook", recipient="",
        subject="Expiration warning", message=f"bench certificate {i} expires soon", severity="warning",
        certificate_id=f"bench-{i}", created_at=datetime.now(UTC), attempt=1))
    _redis.incr(POST_COUNTER_KEY)
