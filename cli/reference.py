"""The configuration reference, ``docs/configuration.md``, written from the code that reads the variables.

Each variable's default comes from `load_settings` itself (it notes the kind and default of every
variable it reads); only its meaning is written here. A test checks that the file matches what this
module renders and that every variable read has a meaning, so the reference cannot drift from the code.

    .venv/bin/python -m cli.reference > docs/configuration.md

The command line's own variables (the API address and key of the commands that call the API) come
from its click options.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click

from certctl_notify.environment import load_settings


@dataclass(frozen=True)
class Variable:
    name: str
    meaning: str
    #: what the default is, where it is derived from other settings rather than one value
    derived_default: str | None = None


SECTIONS: tuple[tuple[str, tuple[Variable, ...]], ...] = (
    ("Storage and broker", (
        Variable("CERTCTL_DATABASE_URL", "PostgreSQL in production: `postgresql://user@host/db` (also "
                 "`postgres://…` and `postgresql+psycopg2://…`; libpq's several hosts `postgresql://u@a:5432,b:5432/db?"
                 "target_session_attrs=read-write` for a failover pair). SQLite is the embedded mode"),
        Variable("CERTCTL_BROKER_URL", "Celery broker: `redis://host:6379/0`, `amqp://user:pass@host:5672/vhost` "
                 "(RabbitMQ), `sentinel://h1:26379;sentinel://h2:26379/0` (Redis Sentinel), or the embedded "
                 "SQLite broker"),
        Variable("CERTCTL_BROKER_SENTINEL_MASTER", "with a `sentinel://h1:26379;sentinel://h2:26379/0` broker "
                 "(Redis Sentinel), the name of the master the sentinels watch; required there"),
        Variable("CERTCTL_DATA_DIR", "where embedded-mode files and the beat schedule live"),
        Variable("CERTCTL_BROKER_VISIBILITY_TIMEOUT", "Redis gives a dead worker's unacknowledged messages back "
                 "after this long; must exceed the longest held wait (`CERTCTL_RETRY_HOLD_MAX`, at most the cap) "
                 "plus the time limit", derived_default="held wait + time limit + 30 s"),
        Variable("CERTCTL_BROKER_CONSUMER_TIMEOUT", "RabbitMQ's `consumer_timeout` as your broker is configured "
                 "(RabbitMQ's default is 30 minutes); a worker refuses to start when an attempt could outlast it"),
        Variable("CERTCTL_INTAKE_CONSUMER_TIMEOUT", "on Redis, a worker's intake relay not heard of for this long "
                 "is dead: the alerts it had taken go back to the queue (at least `1s`)"),
    )),
    ("Retries and the sweep", (
        Variable("CERTCTL_NOTIFICATION_RETRY_BASE", "wait after the first failure; doubles each time"),
        Variable("CERTCTL_NOTIFICATION_RETRY_CAP", "longest single wait, `Retry-After` included"),
        Variable("CERTCTL_NOTIFICATION_MAX_ATTEMPTS", "attempts in all before a row goes dead"),
        Variable("CERTCTL_NOTIFICATION_RETRY_JITTER", "draw each wait from [wait/2, wait]"),
        Variable("CERTCTL_RETRY_HOLD_MAX", "longest retry wait a worker holds as a countdown; longer waits wait in "
                 "PostgreSQL and beat releases them when due. Must be `0` on RabbitMQ, where no retry is held",
                 derived_default="`5s`; `0` on RabbitMQ"),
        Variable("CERTCTL_RETRY_RELEASE_INTERVAL", "how often beat releases the due retries waiting in PostgreSQL "
                 "(a retry may start up to this much after its time)"),
        Variable("CERTCTL_NOTIFICATION_RETRY_INTERVAL", "how often the sweep runs"),
        Variable("CERTCTL_SWEEP_GRACE", "how overdue work must be before the sweep re-publishes it",
                 derived_default="the sweep interval"),
        Variable("CERTCTL_SWEEP_BATCH", "rows re-published per sweep tick at most"),
    )),
    ("Retention", (
        Variable("CERTCTL_RETENTION_DELIVERED", "sent and read rows last changed longer ago than this are deleted "
                 "with their attempts; `0` keeps them for ever"),
        Variable("CERTCTL_RETENTION_DEAD", "the same for dead rows; `0` keeps them for ever (pending and failed rows "
                 "are never deleted)"),
        Variable("CERTCTL_RETENTION_BATCH", "rows the purge deletes per transaction (1 to 10,000)"),
        Variable("CERTCTL_RETENTION_INTERVAL", "how often beat runs the purge (not scheduled when both retentions "
                 "are `0`)"),
    )),
    ("Workers", (
        Variable("CERTCTL_TASK_TIME_LIMIT", "hard limit of one attempt (soft limit 90 % of it)"),
        Variable("CERTCTL_CLAIM_LEASE", "how long a claimed attempt is protected; must exceed the time limit",
                 derived_default="time limit + 30 s"),
        Variable("CERTCTL_WORKER_CONCURRENCY", "pool size for `certctl-notify worker`"),
        Variable("CERTCTL_WORKER_MAX_TASKS_PER_CHILD", "a pool process is replaced after this many tasks (`0`: "
                 "never); bounds slow memory growth"),
        Variable("CERTCTL_REQUEUE_RATE", "rows per second a bulk requeue requeues at most; `0` = no limit "
                 "(batches of 1,000 without pausing)"),
    )),
    ("API, console and monitoring", (
        Variable("CERTCTL_API_KEYS", "`name:key:scope` entries, comma-separated; scope `read` or `admin`"),
        Variable("CERTCTL_AUTH_TYPE", "`none` turns API auth off (local use; `dev` does this when no keys are set)"),
        Variable("CERTCTL_API_HOST", "where `dev` serves the API"),
        Variable("CERTCTL_API_PORT", "where `dev` serves the API"),
        Variable("CERTCTL_CONSOLE_SECRET", "signs console session cookies (at least 32 characters); set it to keep "
                 "sessions across key changes, change it to sign everyone out",
                 derived_default="derived from the API keys"),
        Variable("CERTCTL_CONSOLE_SESSION", "how long a console sign-in lasts"),
        Variable("CERTCTL_METRICS_DIR", "directory API and worker processes share for their counters (see "
                 "Metrics in the README)", derived_default="— (`dev`: `var/metrics`)"),
        Variable("CERTCTL_WORKER_METRICS_PORT", "a worker serves its own pool's counters on this port at "
                 "`/metrics`, a per-host scrape target (`0`: not served); see Metrics in the README"),
        Variable("CERTCTL_METRICS_AUTH", "`true`: `/metrics` needs a read key"),
        Variable("CERTCTL_INSPECT_TIMEOUT", "how long the Workers view waits for workers' replies (at most 30 s)"),
        Variable("CERTCTL_FLOWER_PORT", "where `certctl-notify flower` listens"),
        Variable("CERTCTL_FLOWER_BASIC_AUTH", "`user:password` (comma-separated for several) for `certctl-notify "
                 "flower`; unset = 127.0.0.1 only"),
        Variable("CERTCTL_LOG_FORMAT", "`json` for log shippers"),
        Variable("CERTCTL_LOG_LEVEL", "`DEBUG`, `INFO`, `WARNING` or `ERROR`"),
    )),
    ("Outbound requests", (
        Variable("CERTCTL_OUTBOUND_ALLOW", "hosts/CIDRs the SSRF guard lets through (e.g. `127.0.0.1/32`)"),
        Variable("CERTCTL_HTTP_TIMEOUT", "budget of one outbound HTTP request"),
    )),
    ("Channels (a channel whose variable is unset is not configured: an alert to it goes dead at once)", (
        Variable("CERTCTL_WEBHOOK_URL", "generic webhook target; unset = Webhook not configured"),
        Variable("CERTCTL_WEBHOOK_SECRET", "Standard Webhooks secret(s) `whsec_…`; two space-separated during "
                 "rotation"),
        Variable("CERTCTL_WEBHOOK_HEADERS", "JSON object of extra request headers"),
        Variable("CERTCTL_SMTP_HOST", "SMTP relay; unset = Email not configured"),
        Variable("CERTCTL_SMTP_TLS", "`starttls`, `implicit` (SMTPS) or `none` (plain relay)"),
        Variable("CERTCTL_SMTP_PORT", "the relay's port", derived_default="587 / 465 / 25 by TLS mode"),
        Variable("CERTCTL_SMTP_USERNAME", "AUTH only when username and password are both set"),
        Variable("CERTCTL_SMTP_PASSWORD", "AUTH only when username and password are both set"),
        Variable("CERTCTL_SMTP_ALLOW_PLAINTEXT_AUTH", "`true` permits AUTH with `CERTCTL_SMTP_TLS=none` (the "
                 "password in clear; trusted networks only); without it start-up refuses that combination"),
        Variable("CERTCTL_SMTP_FROM", "From address"),
        Variable("CERTCTL_SMTP_CA_FILE", "PEM bundle trusted for a private relay's certificate"),
        Variable("CERTCTL_SMTP_TIMEOUT", "connect and per-command timeout"),
        Variable("CERTCTL_SLACK_WEBHOOK_URL", "Slack incoming webhook (a secret: redacted everywhere)"),
        Variable("CERTCTL_SLACK_CHANNEL", "optional channel override (legacy webhooks)"),
        Variable("CERTCTL_SLACK_USERNAME", "optional bot name (legacy webhooks)"),
        Variable("CERTCTL_TEAMS_WEBHOOK_URL", "Teams incoming webhook or Workflows URL"),
        Variable("CERTCTL_TEAMS_FORMAT", "`adaptive` (Adaptive Card) or `messagecard`"),
        Variable("CERTCTL_PAGERDUTY_ROUTING_KEY", "Events API v2 integration key"),
        Variable("CERTCTL_PAGERDUTY_URL", "EU accounts: `https://events.eu.pagerduty.com/v2/enqueue`"),
        Variable("CERTCTL_PAGERDUTY_SEVERITY", "`error` (all) or `warning=error,info=warning`",
                 derived_default="each severity as itself"),
        Variable("CERTCTL_PAGERDUTY_SOURCE", "the event's `source`"),
        Variable("CERTCTL_OPSGENIE_API_KEY", "sent as `Authorization: GenieKey …`"),
        Variable("CERTCTL_OPSGENIE_URL", "EU: `https://api.eu.opsgenie.com/v2/alerts`"),
        Variable("CERTCTL_OPSGENIE_PRIORITY", "`P2` (all) or a partial mapping",
                 derived_default="`critical=P1,error=P2,warning=P3,info=P5`"),
    )),
)


def variables() -> dict[str, Variable]:
    return {v.name: v for _title, section in SECTIONS for v in section}


def read_defaults() -> dict[str, tuple[str, object]]:
    """Every variable `load_settings` reads, with its kind and the default it falls back on."""
    reads: dict[str, tuple[str, object]] = {}
    load_settings({}, reads=reads)
    return reads


def format_default(kind: str, default: object) -> str:
    if default is None or default == "":
        return "—"
    if kind == "boolean":
        return "`true`" if default else "`false`"
    if kind == "duration":
        return f"`{format_duration(float(default))}`"
    return f"`{default}`"


def format_duration(seconds: float) -> str:
    """``60`` → ``1m``, ``2592000`` → ``30d``, ``0.05`` → ``50ms``: the largest unit that divides it."""
    if seconds == 0:
        return "0"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds >= 1:
        return f"{seconds:g}s"
    return f"{seconds * 1000:g}ms"


def client_variables() -> dict[str, tuple[object, str]]:
    """The command line's options that an environment variable can give: variable → (default, help)."""
    from cli import main

    found: dict[str, tuple[object, str]] = {}
    for command in main.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and isinstance(param.envvar, str):
                # click 8.2 marks "no default" with a sentinel object, older click with None
                default = param.default if isinstance(param.default, str | int | float) else None
                found.setdefault(param.envvar, (default, (param.help or "").split(" (env")[0].rstrip(".")))
    return found


def render() -> str:
    defaults = read_defaults()
    lines = [
        "# Configuration reference",
        "",
        "Every setting is an environment variable, read once at start-up. Durations accept `50ms`, `60s`, `2m`,",
        "`1h`, `30d` or plain seconds. A malformed value stops start-up with a message naming the variable.",
        "",
        "This file is generated from the code that reads the variables "
        "(`.venv/bin/python -m cli.reference > docs/configuration.md`); a test fails when it is stale.",
    ]
    for title, section in SECTIONS:
        lines += ["", f"## {title}", "", "| variable | default | meaning |", "|---|---|---|"]
        for variable in section:
            kind, default = defaults[variable.name]
            shown = variable.derived_default or format_default(kind, default)
            lines.append(f"| `{variable.name}` | {shown} | {variable.meaning} |")
    lines += ["", "## The command line's API client", "",
              "Read by the `certctl-notify` commands that call the API (`list`, `show`, `stats`, `requeue`, …).",
              "", "| variable | default | meaning |", "|---|---|---|"]
    for name, (default, text) in sorted(client_variables().items()):
        lines.append(f"| `{name}` | {format_default('text', default)} | {text} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
