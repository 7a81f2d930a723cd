"""What kind of broker a URL names. Plain string checks with no imports, so that reading the settings
(`certctl_notify.environment`) does not load Celery."""

from __future__ import annotations


def is_redis(broker_url: str) -> bool:
    return broker_url.startswith(("redis://", "rediss://", "redis+socket://", "sentinel://"))


def is_redis_tcp(broker_url: str) -> bool:
    """A Redis broker `redis_client` can open (kombu's redis+socket:// it cannot)."""
    return broker_url.startswith(("redis://", "rediss://", "sentinel://"))


def is_sentinel(broker_url: str) -> bool:
    """Redis behind Sentinel: ``sentinel://host:26379;sentinel://host2:26379/0`` (kombu's form)."""
    return broker_url.startswith("sentinel://")


def is_amqp(broker_url: str) -> bool:
    """RabbitMQ (kombu's py-amqp transport)."""
    return broker_url.startswith(("amqp://", "amqps://", "pyamqp://"))


def is_embedded_broker(broker_url: str) -> bool:
    """kombu's SQLAlchemy transport (the embedded mode's SQLite broker): no broadcast, so no inspect."""
    return broker_url.startswith(("sqla+", "sqlalchemy+"))
