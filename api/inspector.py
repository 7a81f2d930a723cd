"""Worker state for the Workers view, gathered through Celery's inspect API the way Flower does.

Every call has a timeout and the whole gathering is bounded (about twice the timeout at worst). A broker
that is down, or no worker answering, gives ``{"status": "unavailable", "reason": …}``: this is a
monitoring view, so a failure is reported as missing data, never raised.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from certctl_notify.publish import DELIVER_TASK, QUEUES, amqp_queue_lengths

log = logging.getLogger(__name__)

#: Default wait for workers' replies to one inspect broadcast, in seconds.
DEFAULT_TIMEOUT_SECONDS = 1.0
#: Added to the timeout for one socket read (kombu's Redis transport blocks up to 1 s waiting for replies).
SOCKET_MARGIN_SECONDS = 1.0


def workers_view(app, *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> dict:
    """Workers online, their pool, processed count, active/reserved/scheduled tasks, and queue depths.

    Parameters:
        app: a Celery app on the broker (a publish-only one is enough).
        timeout: seconds to wait for replies to one broadcast; also the broker connect timeout.
    Returns:
        ``{"status": "ok" | "unavailable", "reason", "checked_at", "timeout_seconds", "workers", "queues"}``.
    """
    view = {"status": "unavailable", "reason": None, "checked_at": datetime.now(UTC).isoformat(),
            "timeout_seconds": timeout, "workers": [], "queues": None}
    stage = "broker unavailable"
    try:
        # A broker that accepts the connection and then says nothing must not hang the view either.
        options = {"socket_timeout": timeout + SOCKET_MARGIN_SECONDS}
        with app.connection_for_write(connect_timeout=timeout, transport_options=options) as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)
            view["queues"] = _queue_depths(conn)
            stage = "inspect failed"
            view["workers"] = _gather(app, conn, timeout)
    except Exception as exc:  # reported, not raised: the view says what it could not see
        log.warning("workers view: %s (%s: %s)", stage, type(exc).__name__, exc)
        view["reason"] = f"{stage}: {type(exc).__name__}"
        return view
    if view["workers"]:
        view["status"] = "ok"
    else:
        view["reason"] = f"no worker answered within {timeout:g} s"
    return view


def _gather(app, conn, timeout: float) -> list[dict]:
    deadline = time.monotonic() + 2 * timeout
    # Nobody knows how many workers exist, so this first broadcast waits the whole timeout.
    stats = {name: reply for name, reply in (app.control.inspect(timeout=timeout, connection=conn).stats()
                                             or {}).items() if isinstance(reply, dict)}
    names = sorted(stats)
    if not names:
        return []

    def ask(method: str) -> dict:
        # Addressed to the workers that answered, so it returns as soon as each of them has replied.
        remaining = max(deadline - time.monotonic(), 0.05)
        inspect = app.control.inspect(destination=names, timeout=remaining, connection=conn)
        # A worker that did not answer, or answered with an error, leaves that field null.
        return {name: reply for name, reply in (getattr(inspect, method)() or {}).items() if isinstance(reply, list)}

    active, reserved, scheduled = ask("active"), ask("reserved"), ask("scheduled")
    now = time.time()
    return [_worker(name, stats[name], active.get(name), reserved.get(name), scheduled.get(name), now)
            for name in names]


def _worker(name: str, stats: dict, active, reserved, scheduled, now: float) -> dict:
    pool = stats.get("pool") or {}
    implementation = str(pool.get("implementation", ""))
    return {
        "name": name,
        "online": True,
        "pid": stats.get("pid"),
        "uptime_seconds": stats.get("uptime"),
        # "celery.concurrency.prefork:TaskPool" → "prefork"
        "pool": {"kind": implementation.split(":")[0].rsplit(".", 1)[-1] or None,
                 "size": pool.get("max-concurrency")},
        "processed": sum(n for n in (stats.get("total") or {}).values() if isinstance(n, int)),
        "active": None if active is None else [_active(task, now) for task in active if isinstance(task, dict)],
        "reserved": None if reserved is None else len(reserved),
        "scheduled": None if scheduled is None else len(scheduled),
    }


def _active(task: dict, now: float) -> dict:
    notification_id = attempt = None
    if task.get("name") == DELIVER_TASK:  # deliver(notification_id, attempt=1)
        args, kwargs = task.get("args"), task.get("kwargs")
        args = list(args) if isinstance(args, list | tuple) else []
        kwargs = kwargs if isinstance(kwargs, dict) else {}
        notification_id = args[0] if args else kwargs.get("notification_id")
        attempt = args[1] if len(args) > 1 else kwargs.get("attempt", 1)
    started = task.get("time_start")
    return {
        "task_id": task.get("id"),
        "task": task.get("name"),
        "notification_id": notification_id,
        "attempt": attempt,
        "runtime_seconds": round(max(now - started, 0.0), 3) if isinstance(started, int | float) else None,
        "worker_pid": task.get("worker_pid"),
    }


def _queue_depths(conn) -> dict | None:
    """Messages waiting in each queue (Redis ``LLEN``, all priority lists; RabbitMQ's ready messages);
    None for the embedded broker."""
    if conn.transport.driver_type == "amqp":
        return amqp_queue_lengths(conn)
    if conn.transport.driver_type != "redis":
        return None
    channel = conn.default_channel
    pipe = channel.client.pipeline()
    keys = {q: [q, *(f"{q}{channel.sep}{p}" for p in channel.priority_steps if p)] for q in QUEUES}
    for names in keys.values():
        for key in names:
            pipe.llen(key)
    counts = iter(pipe.execute())
    return {q: sum(next(counts) for _ in names) for q, names in keys.items()}
