"""Reading the environment: the only module that reads ``os.environ``.

`load_settings(environ)` turns every ``CERTCTL_*`` variable into the frozen dataclasses of
`certctl_notify.settings` once, at start-up; an unset or empty variable takes the field's own default
(written once, there). Everything else receives those objects as arguments. A malformed value raises
`ConfigError` naming the variable — never a silent default.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from certctl_notify import database_url
from certctl_notify.broker_urls import is_amqp, is_sentinel
from certctl_notify.errors import ConfigError
from certctl_notify.settings import (
    DEFAULT_OPSGENIE_PRIORITY,
    DEFAULT_PAGERDUTY_SEVERITY,
    EMBEDDED_BROKER_FILE,
    EMBEDDED_DATABASE_FILE,
    LEASE_MARGIN_SECONDS,
    MAX_RETENTION_BATCH,
    SMTP_DEFAULT_PORTS,
    ApiKey,
    ApiSettings,
    MonitorSettings,
    OpsGenieSettings,
    OutboundSettings,
    PagerDutySettings,
    RetentionSettings,
    RetrySettings,
    Settings,
    SlackSettings,
    SmtpSettings,
    SweepSettings,
    TeamsSettings,
    WebhookSettings,
    WorkerSettings,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_HTTP_URL = re.compile(r"^https?://[^\s/]+")


def parse_duration(value: str, name: str) -> float:
    """Return seconds from ``50ms``, ``60s``, ``2m``, ``1h``, ``30d`` or a plain number of seconds.

    Raises:
        ConfigError: naming ``name`` when the value is not a non-negative duration.
    """
    match = _DURATION.match(value)
    if not match:
        raise ConfigError(f"{name}={value!r} is not a duration (use e.g. 50ms, 60s, 2m, 1h, 30d or seconds)")
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def parse_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(f"{name}={value!r} is not a boolean (use true or false)")


def parse_int(value: str, name: str, *, minimum: int = 0) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a whole number") from None
    if number < minimum:
        raise ConfigError(f"{name}={value!r} must be at least {minimum}")
    return number


class _Reader:
    """Typed reads of variables; an unset or empty one gives the ``default`` passed in. With ``reads``,
    each variable's kind and default are noted there as it is read (the configuration reference,
    `certctl_notify.reference`, is written from them)."""

    def __init__(self, environ: Mapping[str, str], reads: dict | None = None):
        self._env = environ
        self._reads = reads

    def _note(self, name: str, kind: str, default) -> None:
        if self._reads is not None:
            self._reads.setdefault(name, (kind, default))

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return None if value is None or value == "" else value

    def text(self, name: str, default: str | None = None) -> str | None:
        self._note(name, "text", default)
        value = self._raw(name)
        return default if value is None else value

    def duration(self, name: str, default: float) -> float:
        self._note(name, "duration", default)
        value = self._raw(name)
        return default if value is None else parse_duration(value, name)

    def integer(self, name: str, default: int, *, minimum: int = 0, maximum: int | None = None) -> int:
        self._note(name, "integer", default)
        value = self._raw(name)
        number = default if value is None else parse_int(value, name, minimum=minimum)
        if maximum is not None and number > maximum:
            raise ConfigError(f"{name} must be at most {maximum}")
        return number

    def boolean(self, name: str, default: bool) -> bool:
        self._note(name, "boolean", default)
        value = self._raw(name)
        return default if value is None else parse_bool(value, name)

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        self._note(name, "choice", default)
        value = (self._raw(name) or default).lower()
        if value not in allowed:
            raise ConfigError(f"{name} must be {', '.join(allowed[:-1])} or {allowed[-1]}")
        return value

    def url(self, name: str, default: str | None = None) -> str | None:
        self._note(name, "url", default)
        value = self._raw(name) or default
        if value and not _HTTP_URL.match(value):
            raise ConfigError(f"{name} must be an http:// or https:// URL")
        return value


def _secrets(value: str, name: str) -> tuple[str, ...]:
    secrets = tuple(value.split())
    for secret in secrets:
        raw = secret.removeprefix("whsec_")
        try:
            if not base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True):
                raise ValueError
        except ValueError:
            raise ConfigError(
                f"{name} must hold one or two space-separated Standard Webhooks secrets "
                "('whsec_' + base64 of at least one byte)"
            ) from None
    return secrets


def _headers(value: str, name: str) -> tuple[tuple[str, str], ...]:
    try:
        parsed = json.loads(value)
    except ValueError:
        raise ConfigError(f"{name} must be a JSON object of header names to values") from None
    if not isinstance(parsed, dict) or not all(isinstance(v, str) for v in parsed.values()):
        raise ConfigError(f"{name} must be a JSON object of header names to string values")
    for key, header in parsed.items():
        if any(c in key + header for c in "\r\n\0"):
            raise ConfigError(f"{name}: header {key!r} contains a line break or NUL")
    return tuple(parsed.items())


def _allow(value: str, name: str) -> tuple[str, ...]:
    entries = tuple(e.strip() for e in value.split(",") if e.strip())
    for entry in entries:
        if "/" in entry:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ConfigError(f"{name}: {entry!r} is not a valid CIDR") from None
    return entries


def _mapping(value: str | None, name: str, default: dict[str, str], allowed: set[str]) -> tuple[tuple[str, str], ...]:
    """``P2`` (every severity) or ``critical=P1,warning=P4`` (the rest keep their default)."""
    if not value:
        return tuple(default.items())
    mapping = dict(default)
    if "=" not in value:
        mapping = dict.fromkeys(default, value.strip())
    else:
        for pair in value.split(","):
            key, _, target = (p.strip() for p in pair.partition("="))
            if key not in default:
                raise ConfigError(f"{name}: {key!r} is not a severity ({', '.join(default)})")
            mapping[key] = target
    bad = sorted(set(mapping.values()) - allowed)
    if bad:
        raise ConfigError(f"{name}: {bad[0]!r} is not one of {', '.join(sorted(allowed))}")
    return tuple(mapping.items())


def _api_keys(value: str, name: str) -> tuple[ApiKey, ...]:
    keys = []
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        parts = entry.split(":")
        if len(parts) != 3 or not all(parts) or parts[2] not in ("read", "admin"):
            raise ConfigError(f"{name}: entries are name:key:scope with scope read or admin")
        keys.append(ApiKey(name=parts[0], key=parts[1], scope=parts[2]))
    return tuple(keys)


def _retry(r: _Reader, broker_url: str) -> RetrySettings:
    # On RabbitMQ a worker holds no retry: its quorum queues give each consumer a fixed prefetch, so a
    # held countdown would occupy a worker's slot until due. Every wait waits in PostgreSQL instead.
    amqp = is_amqp(broker_url)
    hold = r.duration("CERTCTL_RETRY_HOLD_MAX", 0.0 if amqp else RetrySettings.hold_max_seconds)
    if amqp and hold:
        raise ConfigError("CERTCTL_RETRY_HOLD_MAX must be 0 on RabbitMQ (every retry waits in PostgreSQL there: a "
                          "countdown held by a worker would take one of its quorum queue prefetch slots until due)")
    retry = RetrySettings(
        base_seconds=r.duration("CERTCTL_NOTIFICATION_RETRY_BASE", RetrySettings.base_seconds),
        cap_seconds=r.duration("CERTCTL_NOTIFICATION_RETRY_CAP", RetrySettings.cap_seconds),
        max_attempts=r.integer("CERTCTL_NOTIFICATION_MAX_ATTEMPTS", RetrySettings.max_attempts, minimum=1),
        jitter=r.boolean("CERTCTL_NOTIFICATION_RETRY_JITTER", RetrySettings.jitter),
        hold_max_seconds=hold,
        release_interval_seconds=r.duration("CERTCTL_RETRY_RELEASE_INTERVAL", RetrySettings.release_interval_seconds),
    )
    if retry.base_seconds <= 0 or retry.cap_seconds < retry.base_seconds:
        raise ConfigError("CERTCTL_NOTIFICATION_RETRY_CAP must be at least CERTCTL_NOTIFICATION_RETRY_BASE (> 0)")
    if retry.release_interval_seconds <= 0:
        raise ConfigError("CERTCTL_RETRY_RELEASE_INTERVAL must be greater than zero")
    return retry


def _sweep(r: _Reader) -> SweepSettings:
    interval = r.duration("CERTCTL_NOTIFICATION_RETRY_INTERVAL", SweepSettings.interval_seconds)
    if interval <= 0:
        raise ConfigError("CERTCTL_NOTIFICATION_RETRY_INTERVAL must be greater than zero")
    return SweepSettings(
        interval_seconds=interval,
        grace_seconds=r.duration("CERTCTL_SWEEP_GRACE", interval),  # by default one interval
        batch_size=r.integer("CERTCTL_SWEEP_BATCH", SweepSettings.batch_size, minimum=1),
    )


def _retention(r: _Reader) -> RetentionSettings:
    return RetentionSettings(
        delivered_seconds=r.duration("CERTCTL_RETENTION_DELIVERED", RetentionSettings.delivered_seconds),
        dead_seconds=r.duration("CERTCTL_RETENTION_DEAD", RetentionSettings.dead_seconds),
        batch_size=r.integer("CERTCTL_RETENTION_BATCH", RetentionSettings.batch_size, minimum=1,
                             maximum=MAX_RETENTION_BATCH),
        interval_seconds=_positive(r.duration("CERTCTL_RETENTION_INTERVAL", RetentionSettings.interval_seconds),
                                   "CERTCTL_RETENTION_INTERVAL"),
    )


def _worker(r: _Reader) -> WorkerSettings:
    time_limit = r.duration("CERTCTL_TASK_TIME_LIMIT", WorkerSettings.task_time_limit_seconds)
    lease = r.duration("CERTCTL_CLAIM_LEASE", time_limit + LEASE_MARGIN_SECONDS)
    if lease <= time_limit:
        raise ConfigError("CERTCTL_CLAIM_LEASE must be longer than CERTCTL_TASK_TIME_LIMIT")
    visibility = r.text("CERTCTL_BROKER_VISIBILITY_TIMEOUT")
    consumer_timeout = r.duration("CERTCTL_INTAKE_CONSUMER_TIMEOUT", WorkerSettings.intake_consumer_timeout_seconds)
    broker_consumer_timeout = r.duration("CERTCTL_BROKER_CONSUMER_TIMEOUT",
                                         WorkerSettings.broker_consumer_timeout_seconds)
    if consumer_timeout < 1:
        raise ConfigError("CERTCTL_INTAKE_CONSUMER_TIMEOUT must be at least 1s")
    return WorkerSettings(
        task_time_limit_seconds=time_limit,
        lease_seconds=lease,
        visibility_timeout_seconds=(
            parse_duration(visibility, "CERTCTL_BROKER_VISIBILITY_TIMEOUT") if visibility else None
        ),
        concurrency=r.integer("CERTCTL_WORKER_CONCURRENCY", WorkerSettings.concurrency, minimum=1),
        max_tasks_per_child=r.integer("CERTCTL_WORKER_MAX_TASKS_PER_CHILD", WorkerSettings.max_tasks_per_child),
        intake_consumer_timeout_seconds=consumer_timeout,
        broker_consumer_timeout_seconds=broker_consumer_timeout,
        metrics_port=r.integer("CERTCTL_WORKER_METRICS_PORT", WorkerSettings.metrics_port, maximum=65535),
    )


def _smtp(r: _Reader) -> SmtpSettings:
    tls = r.choice("CERTCTL_SMTP_TLS", SmtpSettings.tls, ("starttls", "implicit", "none"))
    ca_file = r.text("CERTCTL_SMTP_CA_FILE")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"CERTCTL_SMTP_CA_FILE={ca_file!r} is not a readable file")
    sender = r.text("CERTCTL_SMTP_FROM", SmtpSettings.sender)
    if any(c in sender for c in "\r\n\0"):
        raise ConfigError("CERTCTL_SMTP_FROM contains a line break or NUL")
    username, password = r.text("CERTCTL_SMTP_USERNAME"), r.text("CERTCTL_SMTP_PASSWORD")
    allow_plaintext_auth = r.boolean("CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH", SmtpSettings.allow_plaintext_auth)
    if tls == "none" and username and password and not allow_plaintext_auth:
        # AUTH would send the password readable by anyone on the path: only an explicit opt-in allows it.
        raise ConfigError("CERTCTL_SMTP_TLS=none with CERTCTL_SMTP_USERNAME and CERTCTL_SMTP_PASSWORD set "
                          "would send the password in clear; use starttls or implicit, or set "
                          "CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH=true for a relay on a trusted network")
    return SmtpSettings(
        host=r.text("CERTCTL_SMTP_HOST"),
        port=r.integer("CERTCTL_SMTP_PORT", SMTP_DEFAULT_PORTS[tls], minimum=1),
        tls=tls,
        username=username,
        password=password,
        sender=sender,
        ca_file=ca_file,
        timeout_seconds=r.duration("CERTCTL_SMTP_TIMEOUT", SmtpSettings.timeout_seconds),
        allow_plaintext_auth=allow_plaintext_auth,
    )


def _channels(r: _Reader) -> dict:
    return {
        "smtp": _smtp(r),
        "webhook": WebhookSettings(
            url=r.url("CERTCTL_WEBHOOK_URL"),
            secrets=_secrets(r.text("CERTCTL_WEBHOOK_SECRET", ""), "CERTCTL_WEBHOOK_SECRET"),
            headers=_headers(r.text("CERTCTL_WEBHOOK_HEADERS", "{}"), "CERTCTL_WEBHOOK_HEADERS"),
        ),
        "slack": SlackSettings(
            webhook_url=r.url("CERTCTL_SLACK_WEBHOOK_URL"),
            channel=r.text("CERTCTL_SLACK_CHANNEL"),
            username=r.text("CERTCTL_SLACK_USERNAME"),
        ),
        "teams": TeamsSettings(
            webhook_url=r.url("CERTCTL_TEAMS_WEBHOOK_URL"),
            format=r.choice("CERTCTL_TEAMS_FORMAT", TeamsSettings.format, ("adaptive", "messagecard")),
        ),
        "pagerduty": PagerDutySettings(
            routing_key=r.text("CERTCTL_PAGERDUTY_ROUTING_KEY"),
            url=r.url("CERTCTL_PAGERDUTY_URL", PagerDutySettings.url),
            severity=_mapping(r.text("CERTCTL_PAGERDUTY_SEVERITY"), "CERTCTL_PAGERDUTY_SEVERITY",
                              DEFAULT_PAGERDUTY_SEVERITY, set(DEFAULT_PAGERDUTY_SEVERITY.values())),
            source=r.text("CERTCTL_PAGERDUTY_SOURCE", PagerDutySettings.source),
        ),
        "opsgenie": OpsGenieSettings(
            api_key=r.text("CERTCTL_OPSGENIE_API_KEY"),
            url=r.url("CERTCTL_OPSGENIE_URL", OpsGenieSettings.url),
            priority=_mapping(r.text("CERTCTL_OPSGENIE_PRIORITY"), "CERTCTL_OPSGENIE_PRIORITY",
                              DEFAULT_OPSGENIE_PRIORITY, {"P1", "P2", "P3", "P4", "P5"}),
        ),
    }


def _api(r: _Reader) -> ApiSettings:
    auth_type = r.choice("CERTCTL_AUTH_TYPE", "api-key", ("api-key", "none"))
    return ApiSettings(
        auth_enabled=auth_type != "none",
        keys=_api_keys(r.text("CERTCTL_API_KEYS", ""), "CERTCTL_API_KEYS"),
        host=r.text("CERTCTL_API_HOST", ApiSettings.host),
        port=r.integer("CERTCTL_API_PORT", ApiSettings.port),
        # 0: no limit (a job then requeues in larger batches without pausing)
        requeue_rate=float(r.integer("CERTCTL_REQUEUE_RATE", int(ApiSettings.requeue_rate), minimum=0)),
        metrics_auth=r.boolean("CERTCTL_METRICS_AUTH", ApiSettings.metrics_auth),
        console_secret=_console_secret(r.text("CERTCTL_CONSOLE_SECRET")),
        console_session_seconds=_positive(r.duration("CERTCTL_CONSOLE_SESSION", ApiSettings.console_session_seconds),
                                          "CERTCTL_CONSOLE_SESSION"),
    )


def _console_secret(value: str | None) -> str | None:
    if value is not None and len(value) < 32:
        raise ConfigError("CERTCTL_CONSOLE_SECRET must be at least 32 characters (e.g. openssl rand -hex 32)")
    return value


def _positive(seconds: float, name: str) -> float:
    if seconds <= 0:
        raise ConfigError(f"{name} must be more than 0")
    return seconds


def _monitor(r: _Reader) -> MonitorSettings:
    entries = tuple(e.strip() for e in r.text("CERTCTL_FLOWER_BASIC_AUTH", "").split(",") if e.strip())
    if any(not user or not password for user, _, password in (e.partition(":") for e in entries)):
        raise ConfigError("CERTCTL_FLOWER_BASIC_AUTH: entries are user:password, comma-separated")
    timeout = r.duration("CERTCTL_INSPECT_TIMEOUT", MonitorSettings.inspect_timeout_seconds)
    if not 0 < timeout <= 30:
        raise ConfigError("CERTCTL_INSPECT_TIMEOUT must be more than 0 and at most 30s")
    port = r.integer("CERTCTL_FLOWER_PORT", MonitorSettings.flower_port, minimum=1, maximum=65535)
    return MonitorSettings(inspect_timeout_seconds=timeout, flower_port=port, flower_basic_auth=entries)


def _sentinel_master(r: _Reader, broker_url: str) -> str | None:
    master = r.text("CERTCTL_BROKER_SENTINEL_MASTER")
    if is_sentinel(broker_url) and not master:
        raise ConfigError("CERTCTL_BROKER_SENTINEL_MASTER must name the master the sentinels of "
                          "CERTCTL_BROKER_URL watch (their 'sentinel monitor <name> …')")
    return master


def load_settings(environ: Mapping[str, str] | None = None, *, reads: dict | None = None) -> Settings:
    """Read and validate every ``CERTCTL_*`` variable of ``environ`` (default: the process environment);
    ``reads``, when given, receives each variable's kind and default as read (see `_Reader`).

    Raises:
        ConfigError: for the first malformed or inconsistent value, naming its variable.
    """
    r = _Reader(os.environ if environ is None else environ, reads)
    data_dir = Path(r.text("CERTCTL_DATA_DIR", str(Settings.data_dir)))
    metrics_dir = r.text("CERTCTL_METRICS_DIR")
    broker_url = r.text("CERTCTL_BROKER_URL", f"sqla+sqlite:///{data_dir / EMBEDDED_BROKER_FILE}")
    return Settings(
        database_url=database_url.resolve(r.text("CERTCTL_DATABASE_URL",
                                                 f"sqlite:///{data_dir / EMBEDDED_DATABASE_FILE}")),
        broker_url=broker_url,
        broker_sentinel_master=_sentinel_master(r, broker_url),
        data_dir=data_dir,
        retry=_retry(r, broker_url),
        sweep=_sweep(r),
        retention=_retention(r),
        worker=_worker(r),
        outbound=OutboundSettings(
            allow=_allow(r.text("CERTCTL_OUTBOUND_ALLOW", ""), "CERTCTL_OUTBOUND_ALLOW"),
            timeout_seconds=r.duration("CERTCTL_HTTP_TIMEOUT", OutboundSettings.timeout_seconds),
        ),
        **_channels(r),
        api=_api(r),
        monitor=_monitor(r),
        log_format=r.choice("CERTCTL_LOG_FORMAT", Settings.log_format, ("text", "json")),
        log_level=r.text("CERTCTL_LOG_LEVEL", Settings.log_level).upper(),
        metrics_dir=Path(metrics_dir) if metrics_dir else None,
    )


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child process we start (the embedded worker): ours plus ``overrides``."""
    return {**os.environ, **overrides}
