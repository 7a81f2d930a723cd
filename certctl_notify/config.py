"""Settings: the only module that reads the environment.

`load_settings(environ)` turns every ``CERTCTL_*`` variable into frozen dataclasses once, at start-up.
Everything else receives those objects as arguments; tests build them directly. A malformed value
raises `ConfigError` naming the variable — never a silent default.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

from certctl_notify.errors import ConfigError
from certctl_notify.settings import (  # noqa: F401  (re-exported: the settings types live there)
    DEFAULT_HTTP_TIMEOUT_SECONDS,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_OPSGENIE_PRIORITY,
    DEFAULT_PAGERDUTY_SEVERITY,
    DEFAULT_RETRY_BASE_SECONDS,
    DEFAULT_RETRY_CAP_SECONDS,
    DEFAULT_SWEEP_BATCH,
    DEFAULT_SWEEP_INTERVAL_SECONDS,
    DEFAULT_TASK_TIME_LIMIT_SECONDS,
    ApiKey,
    ApiSettings,
    MonitorSettings,
    OpsGenieSettings,
    OutboundSettings,
    PagerDutySettings,
    RetrySettings,
    Settings,
    SlackSettings,
    SmtpSettings,
    SweepSettings,
    TeamsSettings,
    WebhookSettings,
    WorkerSettings,
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_duration(value: str, name: str) -> float:
    """Return seconds from ``50ms``, ``60s``, ``2m``, ``1h`` or a plain number of seconds.

    Raises:
        ConfigError: naming ``name`` when the value is not a non-negative duration.
    """
    match = _DURATION.match(value)
    if not match:
        raise ConfigError(f"{name}={value!r} is not a duration (use e.g. 50ms, 60s, 2m, 1h or seconds)")
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


def _url(value: str | None, name: str) -> str | None:
    if value and not re.match(r"^https?://[^\s/]+", value):
        raise ConfigError(f"{name} must be an http:// or https:// URL")
    return value


def _smtp(get) -> SmtpSettings:
    tls = (get("CERTCTL_SMTP_TLS", "starttls") or "").lower()
    if tls not in ("starttls", "implicit", "none"):
        raise ConfigError("CERTCTL_SMTP_TLS must be starttls, implicit or none")
    default_port = {"starttls": "587", "implicit": "465", "none": "25"}[tls]
    ca_file = get("CERTCTL_SMTP_CA_FILE")
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"CERTCTL_SMTP_CA_FILE={ca_file!r} is not a readable file")
    sender = get("CERTCTL_SMTP_FROM", "certctl-notify@localhost")
    if any(c in sender for c in "\r\n\0"):
        raise ConfigError("CERTCTL_SMTP_FROM contains a line break or NUL")
    username, password = get("CERTCTL_SMTP_USERNAME"), get("CERTCTL_SMTP_PASSWORD")
    allow_plaintext_auth = parse_bool(get("CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH", "false"),
                                      "CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH")
    if tls == "none" and username and password and not allow_plaintext_auth:
        # AUTH would send the password readable by anyone on the path: only an explicit opt-in allows it.
        raise ConfigError("CERTCTL_SMTP_TLS=none with CERTCTL_SMTP_USERNAME and CERTCTL_SMTP_PASSWORD set "
                          "would send the password in clear; use starttls or implicit, or set "
                          "CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH=true for a relay on a trusted network")
    return SmtpSettings(
        host=get("CERTCTL_SMTP_HOST"),
        port=parse_int(get("CERTCTL_SMTP_PORT", default_port), "CERTCTL_SMTP_PORT", minimum=1),
        tls=tls,
        username=username,
        password=password,
        sender=sender,
        ca_file=ca_file,
        timeout_seconds=parse_duration(get("CERTCTL_SMTP_TIMEOUT", "10s"), "CERTCTL_SMTP_TIMEOUT"),
        allow_plaintext_auth=allow_plaintext_auth,
    )


def _channels(get) -> dict:
    teams_format = (get("CERTCTL_TEAMS_FORMAT", "adaptive") or "").lower()
    if teams_format not in ("adaptive", "messagecard"):
        raise ConfigError("CERTCTL_TEAMS_FORMAT must be adaptive or messagecard")
    return {
        "smtp": _smtp(get),
        "slack": SlackSettings(
            webhook_url=_url(get("CERTCTL_SLACK_WEBHOOK_URL"), "CERTCTL_SLACK_WEBHOOK_URL"),
            channel=get("CERTCTL_SLACK_CHANNEL"),
            username=get("CERTCTL_SLACK_USERNAME"),
        ),
        "teams": TeamsSettings(
            webhook_url=_url(get("CERTCTL_TEAMS_WEBHOOK_URL"), "CERTCTL_TEAMS_WEBHOOK_URL"), format=teams_format
        ),
        "pagerduty": PagerDutySettings(
            routing_key=get("CERTCTL_PAGERDUTY_ROUTING_KEY"),
            url=_url(get("CERTCTL_PAGERDUTY_URL", PagerDutySettings.url), "CERTCTL_PAGERDUTY_URL"),
            severity=_mapping(get("CERTCTL_PAGERDUTY_SEVERITY"), "CERTCTL_PAGERDUTY_SEVERITY",
                              DEFAULT_PAGERDUTY_SEVERITY, set(DEFAULT_PAGERDUTY_SEVERITY.values())),
            source=get("CERTCTL_PAGERDUTY_SOURCE", "certctl-notify"),
        ),
        "opsgenie": OpsGenieSettings(
            api_key=get("CERTCTL_OPSGENIE_API_KEY"),
            url=_url(get("CERTCTL_OPSGENIE_URL", OpsGenieSettings.url), "CERTCTL_OPSGENIE_URL"),
            priority=_mapping(get("CERTCTL_OPSGENIE_PRIORITY"), "CERTCTL_OPSGENIE_PRIORITY",
                              DEFAULT_OPSGENIE_PRIORITY, {"P1", "P2", "P3", "P4", "P5"}),
        ),
    }


def _api_keys(value: str, name: str) -> tuple[ApiKey, ...]:
    keys = []
    for entry in (e.strip() for e in value.split(",") if e.strip()):
        parts = entry.split(":")
        if len(parts) != 3 or not all(parts) or parts[2] not in ("read", "admin"):
            raise ConfigError(f"{name}: entries are name:key:scope with scope read or admin")
        keys.append(ApiKey(name=parts[0], key=parts[1], scope=parts[2]))
    return tuple(keys)


def _monitor(get) -> MonitorSettings:
    entries = tuple(e.strip() for e in (get("CERTCTL_FLOWER_BASIC_AUTH", "") or "").split(",") if e.strip())
    if any(not user or not password for user, _, password in (e.partition(":") for e in entries)):
        raise ConfigError("CERTCTL_FLOWER_BASIC_AUTH: entries are user:password, comma-separated")
    timeout = parse_duration(get("CERTCTL_INSPECT_TIMEOUT", "1s"), "CERTCTL_INSPECT_TIMEOUT")
    if not 0 < timeout <= 30:
        raise ConfigError("CERTCTL_INSPECT_TIMEOUT must be more than 0 and at most 30s")
    port = parse_int(get("CERTCTL_FLOWER_PORT", "5555"), "CERTCTL_FLOWER_PORT", minimum=1)
    if port > 65535:
        raise ConfigError("CERTCTL_FLOWER_PORT must be at most 65535")
    return MonitorSettings(inspect_timeout_seconds=timeout, flower_port=port, flower_basic_auth=entries)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate every ``CERTCTL_*`` variable.

    Raises:
        ConfigError: for the first malformed or inconsistent value, naming its variable.
    """
    env = os.environ if environ is None else environ

    def get(name: str, default: str | None = None) -> str | None:
        value = env.get(name)
        return default if value is None or value == "" else value

    data_dir = Path(get("CERTCTL_DATA_DIR", "var"))
    retry = RetrySettings(
        base_seconds=parse_duration(get("CERTCTL_NOTIFICATION_RETRY_BASE", "1m"), "CERTCTL_NOTIFICATION_RETRY_BASE"),
        cap_seconds=parse_duration(get("CERTCTL_NOTIFICATION_RETRY_CAP", "1h"), "CERTCTL_NOTIFICATION_RETRY_CAP"),
        max_attempts=parse_int(
            get("CERTCTL_NOTIFICATION_MAX_ATTEMPTS", "5"), "CERTCTL_NOTIFICATION_MAX_ATTEMPTS", minimum=1
        ),
        jitter=parse_bool(get("CERTCTL_NOTIFICATION_RETRY_JITTER", "false"), "CERTCTL_NOTIFICATION_RETRY_JITTER"),
    )
    if retry.base_seconds <= 0 or retry.cap_seconds < retry.base_seconds:
        raise ConfigError("CERTCTL_NOTIFICATION_RETRY_CAP must be at least CERTCTL_NOTIFICATION_RETRY_BASE (> 0)")
    interval = parse_duration(get("CERTCTL_NOTIFICATION_RETRY_INTERVAL", "2m"), "CERTCTL_NOTIFICATION_RETRY_INTERVAL")
    if interval <= 0:
        raise ConfigError("CERTCTL_NOTIFICATION_RETRY_INTERVAL must be greater than zero")
    sweep = SweepSettings(
        interval_seconds=interval,
        grace_seconds=parse_duration(get("CERTCTL_SWEEP_GRACE", str(interval)), "CERTCTL_SWEEP_GRACE"),
        batch_size=parse_int(get("CERTCTL_SWEEP_BATCH", "1000"), "CERTCTL_SWEEP_BATCH", minimum=1),
    )
    time_limit = parse_duration(get("CERTCTL_TASK_TIME_LIMIT", "2m"), "CERTCTL_TASK_TIME_LIMIT")
    lease = parse_duration(get("CERTCTL_CLAIM_LEASE", str(time_limit + 30)), "CERTCTL_CLAIM_LEASE")
    if lease <= time_limit:
        raise ConfigError("CERTCTL_CLAIM_LEASE must be longer than CERTCTL_TASK_TIME_LIMIT")
    visibility = get("CERTCTL_BROKER_VISIBILITY_TIMEOUT")
    worker = WorkerSettings(
        task_time_limit_seconds=time_limit,
        lease_seconds=lease,
        visibility_timeout_seconds=(
            parse_duration(visibility, "CERTCTL_BROKER_VISIBILITY_TIMEOUT") if visibility else None
        ),
        concurrency=parse_int(get("CERTCTL_WORKER_CONCURRENCY", "2"), "CERTCTL_WORKER_CONCURRENCY", minimum=1),
    )
    outbound = OutboundSettings(
        allow=_allow(get("CERTCTL_OUTBOUND_ALLOW", ""), "CERTCTL_OUTBOUND_ALLOW"),
        timeout_seconds=parse_duration(get("CERTCTL_HTTP_TIMEOUT", "15s"), "CERTCTL_HTTP_TIMEOUT"),
    )
    webhook = WebhookSettings(
        url=get("CERTCTL_WEBHOOK_URL"),
        secrets=_secrets(get("CERTCTL_WEBHOOK_SECRET", ""), "CERTCTL_WEBHOOK_SECRET"),
        headers=_headers(get("CERTCTL_WEBHOOK_HEADERS", "{}"), "CERTCTL_WEBHOOK_HEADERS"),
    )
    if webhook.url and not re.match(r"^https?://[^\s/]+", webhook.url):
        raise ConfigError("CERTCTL_WEBHOOK_URL must be an http:// or https:// URL")
    auth_type = get("CERTCTL_AUTH_TYPE", "api-key").lower()
    if auth_type not in ("api-key", "none"):
        raise ConfigError("CERTCTL_AUTH_TYPE must be api-key or none")
    api = ApiSettings(
        auth_enabled=auth_type != "none",
        keys=_api_keys(get("CERTCTL_API_KEYS", ""), "CERTCTL_API_KEYS"),
        host=get("CERTCTL_API_HOST", "127.0.0.1"),
        port=parse_int(get("CERTCTL_API_PORT", "8080"), "CERTCTL_API_PORT"),
        requeue_rate=float(parse_int(get("CERTCTL_REQUEUE_RATE", "100"), "CERTCTL_REQUEUE_RATE", minimum=1)),
        metrics_auth=parse_bool(get("CERTCTL_METRICS_AUTH", "false"), "CERTCTL_METRICS_AUTH"),
    )
    log_format = get("CERTCTL_LOG_FORMAT", "text").lower()
    if log_format not in ("text", "json"):
        raise ConfigError("CERTCTL_LOG_FORMAT must be text or json")
    return Settings(
        database_url=get("CERTCTL_DATABASE_URL", f"sqlite:///{data_dir / 'certctl-notify.sqlite'}"),
        broker_url=get("CERTCTL_BROKER_URL", f"sqla+sqlite:///{data_dir / 'broker.sqlite'}"),
        data_dir=data_dir,
        retry=retry,
        sweep=sweep,
        worker=worker,
        outbound=outbound,
        webhook=webhook,
        **_channels(get),
        api=api,
        monitor=_monitor(get),
        log_format=log_format,
        log_level=get("CERTCTL_LOG_LEVEL", "INFO").upper(),
        metrics_dir=Path(metrics_dir) if (metrics_dir := get("CERTCTL_METRICS_DIR")) else None,
    )


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child process we start (the embedded worker): ours plus ``overrides``."""
    return {**os.environ, **overrides}
