"""The Celery settings delivery depends on, derived from our settings and checked before start."""

from __future__ import annotations

from certctl_notify.broker_urls import is_amqp, is_redis, is_sentinel
from certctl_notify.errors import ConfigError
from certctl_notify.publish import (
    BULK_REQUEUE_TASK,
    CONTROL_QUEUE,
    DELIVER_TASK,
    DELIVERY_QUEUE,
    FOLD_COUNTS_TASK,
    INTAKE_QUEUE,
    PURGE_TASK,
    RELEASE_TASK,
    SWEEP_TASK,
    publish_transport_options,
    task_queues,
)
from certctl_notify.settings import Settings
from certctl_notify.store.counts import COUNT_FOLD_INTERVAL_SECONDS
from workers import redis_transport

#: Seconds added to (longest held countdown + time limit) for the derived Redis visibility timeout.
VISIBILITY_MARGIN_SECONDS = 30
#: How often a worker gives back messages held past the visibility timeout by a worker that died, in seconds.
RESTORE_INTERVAL_SECONDS = 10


def longest_hold(settings: Settings) -> float:
    """The longest a worker holds one message unacknowledged: a held retry's countdown (longer waits
    wait in PostgreSQL) plus the attempt's time limit."""
    return min(settings.retry.cap_seconds, settings.retry.hold_max_seconds) + settings.worker.task_time_limit_seconds


def visibility_timeout(settings: Settings) -> float:
    """Redis gives an unacknowledged message back after this long: a dead worker's messages (an alert's
    intake included) return this soon, so it is kept just past `longest_hold`."""
    return settings.worker.visibility_timeout_seconds or longest_hold(settings) + VISIBILITY_MARGIN_SECONDS


def redis_transport_options(settings: Settings) -> dict:
    """kombu's Redis options: the visibility timeout, and a look for messages past it every
    `RESTORE_INTERVAL_SECONDS` (kombu's default looks only every tenth interval, 100 s); behind
    Sentinel, the master's name too."""
    return {"visibility_timeout": visibility_timeout(settings), "unacked_restore_interval": RESTORE_INTERVAL_SECONDS,
            "unacked_restore_throttle": 1,
            **publish_transport_options(settings.broker_url, settings.broker_sentinel_master)}


def soft_time_limit(settings: Settings) -> float:
    """When Celery interrupts an attempt (SoftTimeLimitExceeded), a little before the hard limit."""
    time_limit = settings.worker.task_time_limit_seconds
    return max(time_limit * 0.9, time_limit - 5)


def claim_patience(settings: Settings) -> float:
    """How long after an attempt starts its claim may wait for an unreachable database: 1/4 of the
    time limit, leaving at least half of it for the send before the outcome's own patience ends."""
    return settings.worker.task_time_limit_seconds * 0.25


def record_patience(settings: Settings) -> float:
    """How long after an attempt starts its outcome record may wait for an unreachable database:
    3/4 of the time limit, which ends before the soft limit interrupts the attempt."""
    return settings.worker.task_time_limit_seconds * 0.75


def celery_config(settings: Settings) -> dict:
    time_limit = settings.worker.task_time_limit_seconds
    return {
        "broker_url": settings.broker_url,
        "broker_connection_retry_on_startup": True,
        # Redis gives an unacked message back after the visibility timeout; a held ETA retry (up to
        # CERTCTL_RETRY_HOLD_MAX) plus its run time must fit inside it, or the retry would run early.
        # (The embedded SQLAlchemy transport takes no such option: it passes them to create_engine.)
        # On RabbitMQ, publisher confirms (publish.py).
        "broker_transport_options": (redis_transport_options(settings) if is_redis(settings.broker_url)
                                     else publish_transport_options(settings.broker_url)),
        # kombu's Redis transport with a channel close that survives a dropped connection (a Redis
        # restart otherwise can stop the worker); kombu lets a redis+socket:// URL's scheme win.
        "broker_transport": _transport(settings.broker_url),
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        # Celery's None means "never replace"; a replaced process finishes its task first.
        "worker_max_tasks_per_child": settings.worker.max_tasks_per_child or None,
        # On a lost broker connection, let a running send finish and record its outcome: cancelling
        # it (Celery 6's planned default) kills the pool process mid-send, and the sweep would send
        # that attempt again. The unacked message comes back later and its claim finds nothing to do.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "task_time_limit": time_limit,
        "task_soft_time_limit": soft_time_limit(settings),
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_default_queue": INTAKE_QUEUE,
        "task_queues": task_queues(settings.broker_url),
        "task_routes": {DELIVER_TASK: {"queue": DELIVERY_QUEUE},
                        **{name: {"queue": CONTROL_QUEUE} for name in (SWEEP_TASK, RELEASE_TASK, BULK_REQUEUE_TASK,
                                                                            FOLD_COUNTS_TASK, PURGE_TASK)}},
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "enable_utc": True,
        "timezone": "UTC",
        "beat_schedule": {
            **_purge_schedule(settings),
            "certctl-sweep": {
                "task": SWEEP_TASK,
                "schedule": settings.sweep.interval_seconds,
                # A tick nobody ran in time is useless: the next one covers it.
                "options": {"expires": settings.sweep.interval_seconds},
            },
            "certctl-release-retries": {
                "task": RELEASE_TASK,
                "schedule": settings.retry.release_interval_seconds,
                "options": {"expires": settings.retry.release_interval_seconds},
            },
            # keeps the deltas a count read sums few (store/counts.py)
            "certctl-fold-counts": {
                "task": FOLD_COUNTS_TASK,
                "schedule": COUNT_FOLD_INTERVAL_SECONDS,
                "options": {"expires": COUNT_FOLD_INTERVAL_SECONDS},
            },
        },
        "beat_schedule_filename": str(settings.data_dir / "celerybeat-schedule"),
    }


def _transport(broker_url: str) -> str | None:
    if is_sentinel(broker_url):
        return redis_transport.SENTINEL_TRANSPORT
    return redis_transport.TRANSPORT if is_redis(broker_url) else None


def _purge_schedule(settings: Settings) -> dict:
    """Retention's purge (certctl_notify/retention.py), unless every class of rows is kept for ever."""
    if not settings.retention.enabled:
        return {}
    interval = settings.retention.interval_seconds
    return {"certctl-purge": {"task": PURGE_TASK, "schedule": interval, "options": {"expires": interval}}}


def validate_celery(conf, settings: Settings) -> None:
    """Refuse to start when a setting that delivery depends on is wrong.

    Raises:
        ConfigError: naming the setting and what it must be.
    """
    required = {"task_acks_late": True, "task_reject_on_worker_lost": True, "worker_prefetch_multiplier": 1,
                "worker_cancel_long_running_tasks_on_connection_loss": False}
    for name, value in required.items():
        if conf.get(name) != value:
            raise ConfigError(f"Celery setting {name} must be {value!r} (is {conf.get(name)!r}): "
                              "without it a crashed or duplicated delivery can be lost or sent twice")
    if is_redis(str(conf.get("broker_url", ""))):
        vt = (conf.get("broker_transport_options") or {}).get("visibility_timeout", 3600)
        needed = longest_hold(settings)
        if vt <= needed:
            raise ConfigError(
                f"CERTCTL_BROKER_VISIBILITY_TIMEOUT ({vt:g}s) must be longer than the longest retry a worker "
                f"holds (CERTCTL_RETRY_HOLD_MAX, at most the retry cap) plus the task time limit ({needed:g}s), "
                "or Redis redelivers held retries early"
            )
    if is_amqp(str(conf.get("broker_url", ""))):
        _validate_rabbitmq(conf, settings)
    if settings.worker.lease_seconds <= settings.worker.task_time_limit_seconds:
        raise ConfigError("CERTCTL_CLAIM_LEASE must be longer than CERTCTL_TASK_TIME_LIMIT")


def _validate_rabbitmq(conf, settings: Settings) -> None:
    """Quorum queues take no global QoS (Celery turns it off when it detects them), and RabbitMQ closes
    the channel of a consumer that holds a message past its consumer_timeout: every message a worker
    holds (no retry is held there: each waits in PostgreSQL) must be done well before that."""
    if not conf.get("worker_detect_quorum_queues", True):
        raise ConfigError("Celery setting worker_detect_quorum_queues must be True on RabbitMQ: quorum queues "
                          "refuse the global QoS Celery otherwise asks for")
    needed = longest_hold(settings) + VISIBILITY_MARGIN_SECONDS
    if settings.worker.broker_consumer_timeout_seconds <= needed:
        raise ConfigError(
            f"CERTCTL_TASK_TIME_LIMIT plus a {VISIBILITY_MARGIN_SECONDS}s margin ({needed:g}s) must be shorter than "
            f"RabbitMQ's consumer_timeout (CERTCTL_BROKER_CONSUMER_TIMEOUT, "
            f"{settings.worker.broker_consumer_timeout_seconds:g}s), or the broker closes a worker's channel "
            "mid-attempt; raise consumer_timeout in rabbitmq.conf and the setting with it"
        )
