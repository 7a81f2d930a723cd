"""The settings objects: frozen dataclasses, one per concern, each field with a one-line help.

Every default is written here once: `certctl_notify.environment.load_settings` reads the environment
into these objects and falls back on the fields' own defaults; tests build the objects directly.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

#: Default exponential-backoff base, in seconds (1, 2, 4, 8 minutes).
DEFAULT_RETRY_BASE_SECONDS = 60.0
#: Default cap on one backoff wait, in seconds.
DEFAULT_RETRY_CAP_SECONDS = 3600.0
#: Default number of delivery attempts in all (first send + 4 retries).
DEFAULT_MAX_ATTEMPTS = 5
#: Longest retry wait a worker holds as a countdown message by default, in seconds; longer waits
#: wait in PostgreSQL and are released when due (so a worker never holds an outage's retries).
DEFAULT_RETRY_HOLD_MAX_SECONDS = 5.0
#: How often due retries waiting in PostgreSQL are released by default, in seconds.
DEFAULT_RETRY_RELEASE_INTERVAL_SECONDS = 5.0
#: Default period of the sweep that re-dispatches lost or overdue work, in seconds.
DEFAULT_SWEEP_INTERVAL_SECONDS = 120.0
#: Rows the sweep re-dispatches per tick at most.
DEFAULT_SWEEP_BATCH = 1000
#: Default age, in seconds since their last change, of sent and read rows that retention deletes (30 days).
DEFAULT_RETENTION_DELIVERED_SECONDS = 30 * 86400.0
#: Default age, in seconds since they went dead, of dead rows that retention deletes (90 days).
DEFAULT_RETENTION_DEAD_SECONDS = 90 * 86400.0
#: Rows retention deletes per transaction by default.
DEFAULT_RETENTION_BATCH = 1000
#: Largest batch allowed: a batch is one transaction, and its locks must stay short.
MAX_RETENTION_BATCH = 10_000
#: Default period of the retention purge, in seconds.
DEFAULT_RETENTION_INTERVAL_SECONDS = 3600.0
#: Hard time limit of one delivery task, in seconds.
DEFAULT_TASK_TIME_LIMIT_SECONDS = 120.0
#: Total time budget of one outbound HTTP request, in seconds.
DEFAULT_HTTP_TIMEOUT_SECONDS = 15.0
#: How much longer than the task time limit a claim lease runs by default, in seconds.
LEASE_MARGIN_SECONDS = 30.0
#: Files of the embedded mode (SQLite data and broker) under the data directory.
EMBEDDED_DATABASE_FILE = "certctl-notify.sqlite"
EMBEDDED_BROKER_FILE = "broker.sqlite"
#: The SMTP port each TLS mode uses unless CERTCTL_SMTP_PORT says otherwise.
SMTP_DEFAULT_PORTS = {"starttls": 587, "implicit": 465, "none": 25}


@dataclass(frozen=True)
class RetrySettings:
    base_seconds: float = DEFAULT_RETRY_BASE_SECONDS  #: wait after the first failure
    cap_seconds: float = DEFAULT_RETRY_CAP_SECONDS  #: longest single wait, Retry-After included
    max_attempts: int = DEFAULT_MAX_ATTEMPTS  #: attempts in all before a row goes dead
    jitter: bool = False  #: spread waits randomly within [wait/2, wait]
    #: longest wait held by a worker as a countdown; longer ones wait in PostgreSQL until released
    hold_max_seconds: float = DEFAULT_RETRY_HOLD_MAX_SECONDS
    #: how often beat releases the retries waiting in PostgreSQL that are due
    release_interval_seconds: float = DEFAULT_RETRY_RELEASE_INTERVAL_SECONDS


@dataclass(frozen=True)
class SweepSettings:
    interval_seconds: float = DEFAULT_SWEEP_INTERVAL_SECONDS  #: how often beat runs the sweep
    grace_seconds: float = DEFAULT_SWEEP_INTERVAL_SECONDS  #: how overdue work must be before re-dispatch
    batch_size: int = DEFAULT_SWEEP_BATCH  #: rows re-dispatched per tick at most


@dataclass(frozen=True)
class RetentionSettings:
    #: sent and read rows whose last change is older than this are deleted; 0 = kept for ever
    delivered_seconds: float = DEFAULT_RETENTION_DELIVERED_SECONDS
    dead_seconds: float = DEFAULT_RETENTION_DEAD_SECONDS  #: the same for dead rows; 0 = kept for ever
    batch_size: int = DEFAULT_RETENTION_BATCH  #: rows deleted per transaction
    interval_seconds: float = DEFAULT_RETENTION_INTERVAL_SECONDS  #: how often beat runs the purge

    @property
    def enabled(self) -> bool:
        """True when some class of rows is deleted at all."""
        return bool(self.delivered_seconds or self.dead_seconds)


@dataclass(frozen=True)
class WorkerSettings:
    task_time_limit_seconds: float = DEFAULT_TASK_TIME_LIMIT_SECONDS  #: hard limit of one attempt
    #: claim lease; must outlive the time limit
    lease_seconds: float = DEFAULT_TASK_TIME_LIMIT_SECONDS + LEASE_MARGIN_SECONDS
    visibility_timeout_seconds: float | None = None  #: Redis redelivery timeout; None = derived
    concurrency: int = 2  #: worker processes started by the CLI wrapper
    #: a pool process is replaced after this many tasks (0 = never): bounds the slow RSS growth a
    #: long-lived Python process shows from allocator fragmentation
    max_tasks_per_child: int = 1000
    #: on Redis, an intake relay not heard of for this long is dead and its fetched alerts are taken back
    intake_consumer_timeout_seconds: float = 30
    #: where a worker serves its own /metrics (its pool's counters) for a per-host scrape; 0 = not served
    metrics_port: int = 0
    #: RabbitMQ's consumer_timeout as the broker is configured (its default: 30 minutes): a message held
    #: unacknowledged for longer makes the broker close the worker's channel
    broker_consumer_timeout_seconds: float = 1800.0


@dataclass(frozen=True)
class OutboundSettings:
    allow: tuple[str, ...] = ()  #: hosts or CIDRs the SSRF guard lets through
    timeout_seconds: float = DEFAULT_HTTP_TIMEOUT_SECONDS  #: total budget of one outbound request
    max_response_bytes: int = 64 * 1024  #: response body read at most

    def allows(self, host: str, address: str) -> bool:
        """True when ``host`` or its resolved ``address`` is explicitly allowed."""
        ip = ipaddress.ip_address(address)
        for entry in self.allow:
            if entry.lower() == host.lower():
                return True
            try:
                if ip in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                continue
        return False


@dataclass(frozen=True)
class WebhookSettings:
    url: str | None = None  #: where generic webhooks are POSTed
    secrets: tuple[str, ...] = ()  #: Standard Webhooks secrets (``whsec_…``); two during rotation
    headers: tuple[tuple[str, str], ...] = ()  #: extra request headers


#: PagerDuty Events v2 severity and OpsGenie priority for each alert severity (override per variable).
DEFAULT_PAGERDUTY_SEVERITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}
DEFAULT_OPSGENIE_PRIORITY = {"critical": "P1", "error": "P2", "warning": "P3", "info": "P5"}


@dataclass(frozen=True)
class SmtpSettings:
    host: str | None = None  #: SMTP relay; unset = Email channel not configured
    port: int = 587  #: default follows tls: 587 starttls, 465 implicit, 25 none
    tls: str = "starttls"  #: starttls | implicit | none
    username: str | None = None  #: AUTH only when username and password are both set
    password: str | None = field(default=None, repr=False)
    sender: str = "certctl-notify@localhost"  #: the From address
    ca_file: str | None = None  #: PEM bundle trusted for the relay's certificate (private CAs)
    timeout_seconds: float = 10.0  #: connect and per-command I/O timeout
    allow_plaintext_auth: bool = False  #: permit AUTH (the password in clear) with tls=none


@dataclass(frozen=True)
class SlackSettings:
    webhook_url: str | None = field(default=None, repr=False)  #: incoming-webhook URL (a secret)
    channel: str | None = None  #: optional channel override
    username: str | None = None  #: optional bot name


@dataclass(frozen=True)
class TeamsSettings:
    webhook_url: str | None = field(default=None, repr=False)  #: incoming webhook or Workflows URL
    format: str = "adaptive"  #: adaptive | messagecard


@dataclass(frozen=True)
class PagerDutySettings:
    routing_key: str | None = field(default=None, repr=False)  #: Events API v2 integration key
    url: str = "https://events.pagerduty.com/v2/enqueue"  #: EU accounts use events.eu.pagerduty.com
    severity: tuple[tuple[str, str], ...] = tuple(DEFAULT_PAGERDUTY_SEVERITY.items())  #: alert → PD severity
    source: str = "certctl-notify"  #: the event's source field


@dataclass(frozen=True)
class OpsGenieSettings:
    api_key: str | None = field(default=None, repr=False)  #: sent as "Authorization: GenieKey …"
    url: str = "https://api.opsgenie.com/v2/alerts"  #: EU: https://api.eu.opsgenie.com/v2/alerts
    priority: tuple[tuple[str, str], ...] = tuple(DEFAULT_OPSGENIE_PRIORITY.items())  #: alert → P1..P5


@dataclass(frozen=True)
class ApiKey:
    name: str
    key: str = field(repr=False)
    scope: str  # "read" or "admin"


@dataclass(frozen=True)
class ApiSettings:
    auth_enabled: bool = True  #: CERTCTL_AUTH_TYPE=none turns it off (local use only)
    keys: tuple[ApiKey, ...] = ()  #: bearer keys with their scope
    host: str = "127.0.0.1"  #: where `certctl-notify dev` serves the API
    port: int = 8080
    requeue_rate: float = 100.0  #: rows per second a bulk requeue requeues at most; 0 = no limit
    metrics_auth: bool = False  #: require a read key for /metrics
    #: signs the console's session cookie; unset: derived from the API keys (changing a key signs everyone out)
    console_secret: str | None = field(default=None, repr=False)
    console_session_seconds: float = 12 * 3600.0  #: how long a console sign-in lasts


@dataclass(frozen=True)
class MonitorSettings:
    inspect_timeout_seconds: float = 1.0  #: wait for workers' replies in the Workers view
    flower_port: int = 5555  #: where `certctl-notify flower` listens
    flower_basic_auth: tuple[str, ...] = field(default=(), repr=False)  #: user:password entries for Flower


@dataclass(frozen=True)
class Settings:
    database_url: str  #: SQLAlchemy URL; default: the embedded SQLite file under data_dir
    broker_url: str  #: Celery broker URL; default: the embedded SQLite broker under data_dir
    broker_sentinel_master: str | None = None  #: behind Redis Sentinel, the name of the master they watch
    data_dir: Path = Path("var")
    retry: RetrySettings = RetrySettings()
    sweep: SweepSettings = SweepSettings()
    retention: RetentionSettings = RetentionSettings()
    worker: WorkerSettings = WorkerSettings()
    outbound: OutboundSettings = OutboundSettings()
    webhook: WebhookSettings = WebhookSettings()
    smtp: SmtpSettings = SmtpSettings()
    slack: SlackSettings = SlackSettings()
    teams: TeamsSettings = TeamsSettings()
    pagerduty: PagerDutySettings = PagerDutySettings()
    opsgenie: OpsGenieSettings = OpsGenieSettings()
    api: ApiSettings = ApiSettings()
    monitor: MonitorSettings = MonitorSettings()
    log_format: str = "text"  #: "text" or "json"
    log_level: str = "INFO"
    metrics_dir: Path | None = None  #: where API and worker processes keep counters; None = in-process only

    @property
    def embedded(self) -> bool:
        """True when running on SQLite (the try-it-out mode), not PostgreSQL + Redis."""
        return self.database_url.startswith("sqlite")
