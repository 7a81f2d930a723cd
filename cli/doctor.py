"""``certctl-notify doctor``: check an installation and say what is wrong and how to fix it.

In order: the configuration (`load_settings`), the database and its schema, the broker, the workers, and
each configured channel's peer. Nothing is sent anywhere: a channel's peer is resolved, checked against
the channels' SSRF guard and connected to (a TLS handshake for https, the greeting and EHLO/STARTTLS/QUIT
for SMTP), never given a request or a mail. ``--timeout`` bounds each connection and each wait for an
answer, and every check runs in a thread waited for a few timeouts at most, so a black-holed host cannot
hang the command; the checks that do not depend on each other run side by side.

Nothing is imported at module level beyond click: ``certctl-notify --help`` stays fast.
"""

from __future__ import annotations

import json
import math
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import click

OK, PROBLEM, WARNING, SKIPPED = "ok", "problem", "warning", "skipped"
#: The mark and colour of each status in the default output.
MARKS = {OK: ("✓", "green"), PROBLEM: ("✗", "red"), WARNING: ("!", "yellow"), SKIPPED: ("-", None)}
DEFAULT_TIMEOUT_SECONDS = 3.0
#: Added to a check's own timeouts for its hard bound (a driver's timeout is not always exact: libpq
#: waits at least 2 s).
BOUND_MARGIN_SECONDS = 1.0
SMTP_FIX = "check CERTCTL_SMTP_HOST and CERTCTL_SMTP_PORT, and that this host may reach the relay"
#: The default ports of the broker schemes, for saying which host:port was tried.
_BROKER_PORTS = {"redis": 6379, "rediss": 6379, "sentinel": 26379, "amqp": 5672, "pyamqp": 5672, "amqps": 5671}
#: HTTP channels: (name, variable naming the URL checked, its URL when the channel is configured).
_HTTP_CHANNELS: tuple[tuple[str, str, Callable], ...] = (
    ("Webhook", "CERTCTL_WEBHOOK_URL", lambda s: s.webhook.url),
    ("Slack", "CERTCTL_SLACK_WEBHOOK_URL", lambda s: s.slack.webhook_url),
    ("Teams", "CERTCTL_TEAMS_WEBHOOK_URL", lambda s: s.teams.webhook_url),
    ("PagerDuty", "CERTCTL_PAGERDUTY_URL", lambda s: s.pagerduty.url if s.pagerduty.routing_key else None),
    ("OpsGenie", "CERTCTL_OPSGENIE_URL", lambda s: s.opsgenie.url if s.opsgenie.api_key else None),
)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  #: ok | problem | warning | skipped
    detail: str  #: one line, never a secret
    fix: str | None = None  #: what to do, for problems (and some warnings)


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print {ok, checks: [{name, status, detail, fix}]} as JSON.")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=60.0), default=DEFAULT_TIMEOUT_SECONDS,
              show_default=True, help="Seconds each connection and answer is waited for at most.")
def doctor(as_json: bool, timeout: float) -> None:
    """Check the configuration, database, broker, workers and channels; say what is wrong and how to fix it.

    Sends nothing. Exit status 0 when no problem was found (warnings allowed), 1 otherwise.
    """
    import logging

    if not logging.getLogger().handlers:
        # The libraries' own warnings (kombu, the inspector) would repeat what a check says, on stderr.
        logging.getLogger().addHandler(logging.NullHandler())
    checks = run_checks(timeout)
    problems = sum(check.status == PROBLEM for check in checks)
    if as_json:
        click.echo(json.dumps({"ok": not problems, "checks": [asdict(check) for check in checks]}, indent=2))
    else:
        click.echo(render(checks))
    sys.exit(1 if problems else 0)


def render(checks: list[Check]) -> str:
    """One aligned line per check (and a ``fix:`` line under it), then the count of problems."""
    width = max(len(check.name) for check in checks)
    lines = []
    for check in checks:
        mark, colour = MARKS[check.status]
        lines.append(f"{click.style(mark, fg=colour, bold=True)} {check.name:<{width}}  {check.detail}")
        if check.fix:
            lines.append(f"  {'':<{width}}  {click.style('fix:', fg=colour)} {check.fix}")
    problems = sum(check.status == PROBLEM for check in checks)
    warnings = sum(check.status == WARNING for check in checks)
    summary = (f"{problems} problem{'s' * (problems != 1)}" if problems else "no problems found")
    if warnings:
        summary += f", {warnings} warning{'s' * (warnings != 1)}"
    lines.append(summary)
    return "\n".join(lines)


def run_checks(timeout: float) -> list[Check]:
    """Every check, in the order they are shown."""
    from certctl_notify.environment import load_settings
    from certctl_notify.errors import ConfigError
    from certctl_notify.redact import redact

    try:
        settings = load_settings()
    except ConfigError as exc:
        skipped = "skipped: needs a configuration that can be read"
        return [
            Check("configuration", PROBLEM, redact(str(exc)),
                  fix="correct that variable where certctl-notify runs (docs/configuration.md lists every one)"),
            *(Check(name, SKIPPED, skipped) for name in ("database", "schema", "broker", "workers", "channels")),
        ]
    groups: list[Callable[[], list[Check]]] = [
        lambda: _database_checks(settings, timeout),
        lambda: _broker_checks(settings, timeout),
        *(_channel_group(name, settings, timeout) for name in ("Email", *(c[0] for c in _HTTP_CHANNELS))),
    ]
    return [_configuration(settings), *_in_parallel(groups)]


# -- running checks within bounds --------------------------------------------------------------------------


def _in_parallel(groups: list[Callable[[], list[Check]]]) -> list[Check]:
    """Run each group in a thread of its own; their checks in the groups' order. Every group bounds its
    own checks (`_bounded`), so joining them cannot hang."""
    results: list[list[Check]] = [[] for _ in groups]

    def run(index: int, group: Callable[[], list[Check]]) -> None:
        results[index] = group()

    threads = [threading.Thread(target=run, args=(i, group), daemon=True) for i, group in enumerate(groups)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [check for group in results for check in group]


def _bounded(work: Callable[[], list[Check]], limit: float, on_timeout: list[Check]) -> list[Check]:
    """``work()`` in a daemon thread, waited for ``limit`` seconds at most (then ``on_timeout``, and the
    thread is left to finish or die with the process). An unexpected error is a problem of the first check."""
    from certctl_notify.publish import describe
    from certctl_notify.redact import redact

    result: list[list[Check]] = []

    def run() -> None:
        try:
            result.append(work())
        except Exception as exc:  # reported, not raised: the doctor's job is to say what is wrong
            first = on_timeout[0]
            failed = Check(first.name, PROBLEM, f"unexpected error: {redact(describe(exc))}", first.fix)
            skipped = f"skipped: the {first.name} check failed"
            result.append([failed, *(Check(c.name, SKIPPED, skipped) for c in on_timeout[1:])])

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    return result[0] if result else on_timeout


def _first_line(exc: BaseException, secrets=()) -> str:
    from certctl_notify.redact import redact

    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return redact(text[0] if text else type(exc).__name__, secrets)


# -- configuration ------------------------------------------------------------------------------------------


def _configuration(settings) -> Check:
    from certctl_notify.broker_urls import is_amqp, is_embedded_broker, is_sentinel

    configured = [name for name in ("Email", *(c[0] for c in _HTTP_CHANNELS)) if _channel_target(name, settings)]
    database = "SQLite" if settings.embedded else "PostgreSQL"
    broker = ("embedded SQLite" if is_embedded_broker(settings.broker_url) else "RabbitMQ"
              if is_amqp(settings.broker_url) else "Redis Sentinel" if is_sentinel(settings.broker_url) else "Redis")
    detail = f"{database} database, {broker} broker, channels: {', '.join(configured) or 'none'}"
    if not configured:
        return Check("configuration", WARNING, f"{detail}: every alert would go dead as not configured",
                     fix="configure a channel, e.g. CERTCTL_WEBHOOK_URL or CERTCTL_SMTP_HOST (docs/configuration.md)")
    if settings.embedded or is_embedded_broker(settings.broker_url):
        return Check("configuration", WARNING, f"{detail}: the embedded mode is for trying certctl-notify out",
                     fix="in production set CERTCTL_DATABASE_URL (PostgreSQL) and CERTCTL_BROKER_URL "
                         "(Redis or RabbitMQ)")
    return Check("configuration", OK, detail)


# -- database -----------------------------------------------------------------------------------------------


def _database_target(url) -> str:
    """``host:port/database`` of a SQLAlchemy URL (every host of a multi-host one); never the password."""
    hosts = url.query.get("host")
    if hosts:
        hosts = ",".join([hosts] if isinstance(hosts, str) else hosts)
    else:
        hosts = f"{url.host or 'localhost'}:{url.port or 5432}"
    return f"{hosts}/{url.database or ''}"


def _database_checks(settings, timeout: float) -> list[Check]:
    from sqlalchemy import make_url

    url = make_url(settings.database_url)
    if settings.embedded:
        target = f"SQLite file {url.database}"
        fix = "check that the file is readable and writable here, or correct CERTCTL_DATABASE_URL"
    else:
        target = _database_target(url)
        fix = (f"check that PostgreSQL runs at {target.rsplit('/', 1)[0]} and accepts connections, and that "
               "CERTCTL_DATABASE_URL names it (host, port, database, user and password)")
    timed_out = [Check("database", PROBLEM, f"no answer from {target} within {max(timeout, 2.0):g} s", fix),
                 Check("schema", SKIPPED, "skipped: the database cannot be reached")]
    return _bounded(lambda: _database(settings, url, target, fix, timeout), max(timeout, 2.0) + BOUND_MARGIN_SECONDS,
                    timed_out)


def _database(settings, url, target: str, fix: str, timeout: float) -> list[Check]:
    from pathlib import Path

    from alembic.runtime.migration import MigrationContext
    from sqlalchemy.pool import NullPool

    from certctl_notify.db import make_engine

    unreachable = Check("schema", SKIPPED, "skipped: the database cannot be reached")
    if settings.embedded:
        if url.database and url.database != ":memory:" and not Path(url.database).is_file():
            # Connecting would create the file (and its directory): say so instead.
            return [Check("database", PROBLEM, f"{target} does not exist",
                          fix="run `certctl-notify migrate` (or `certctl-notify dev`, which migrates first)"),
                    Check("schema", SKIPPED, "skipped: no database yet")]
        engine = make_engine(settings.database_url, poolclass=NullPool)
    else:
        engine = make_engine(settings.database_url, poolclass=NullPool, connect_args=_connect_timeout(url, timeout))
    try:
        with engine.connect() as connection:
            version = connection.dialect.server_version_info or ()
            current = set(MigrationContext.configure(connection).get_current_heads())
    except Exception as exc:  # any failure to connect or read is what this check reports
        return [Check("database", PROBLEM, f"cannot connect to {target}: {_first_line(exc, (url.password or '',))}",
                      fix), unreachable]
    finally:
        engine.dispose()
    server = " ".join(["SQLite" if settings.embedded else "PostgreSQL", ".".join(str(n) for n in version[:2])])
    database = Check("database", OK, f"connected to {target} ({server.strip()})")
    return [database, _schema(settings.database_url, current)]


def _connect_timeout(url, timeout: float) -> dict:
    """The driver's own connect timeout: libpq's ``connect_timeout`` (whole seconds, 2 at least), pg8000's
    ``timeout``."""
    if url.get_driver_name() == "pg8000":
        return {"timeout": timeout}
    return {"connect_timeout": max(2, math.ceil(timeout))}


def _schema(database_url: str, current: set[str]) -> Check:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    from certctl_notify.migrate import alembic_config

    script = ScriptDirectory.from_config(alembic_config(database_url))
    heads = set(script.get_heads())
    shown = ", ".join(sorted(current))
    if current == heads:
        return Check("schema", OK, f"at the latest revision ({', '.join(sorted(heads))})")
    migrate = "run `certctl-notify migrate` (safe to run repeatedly; it takes a lock, so one replica migrates)"
    if not current:
        return Check("schema", PROBLEM, "the database has no schema yet (never migrated)", migrate)
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:
            return Check("schema", PROBLEM, f"at revision {shown}, which this version of certctl-notify does not "
                         "know: a newer version migrated it",
                         "run the certctl-notify version that migrated it (docs/upgrading.md)")
    return Check("schema", PROBLEM, f"at revision {shown}, not the latest ({', '.join(sorted(heads))})", migrate)


# -- broker and workers -------------------------------------------------------------------------------------


def _broker_target(settings) -> str:
    """scheme://host:port of each server of the broker URL (the file of the embedded one); never a password."""
    from urllib.parse import urlsplit

    from certctl_notify.broker_urls import is_embedded_broker

    url = settings.broker_url
    if is_embedded_broker(url):
        return f"embedded SQLite broker {url.split(':///', 1)[-1]}"
    shown = []
    for part in url.split(";"):
        parts = urlsplit(part)
        if not parts.hostname:
            shown.append(f"{parts.scheme}://{parts.path}")
            continue
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        try:
            port = parts.port or _BROKER_PORTS.get(parts.scheme, "")
        except ValueError:
            port = "?"
        shown.append(f"{parts.scheme}://{host}:{port}")
    return ", ".join(shown)


def _broker_checks(settings, timeout: float) -> list[Check]:
    from certctl_notify.broker_urls import is_embedded_broker

    target = _broker_target(settings)
    fix = f"check that the broker runs at {target} and that CERTCTL_BROKER_URL names it"
    if is_embedded_broker(settings.broker_url):
        fix = "check that the file is readable and writable here, or correct CERTCTL_BROKER_URL"
    workers_unknown = Check("workers", PROBLEM, "no worker can be asked, and none can take alerts: the broker "
                            "does not answer",
                            "fix the broker first (above); then make sure a worker runs (`certctl-notify worker`)")
    [broker] = _bounded(lambda: [_broker(settings, target, fix, timeout)], timeout + BOUND_MARGIN_SECONDS,
                        [Check("broker", PROBLEM, f"no answer from {target} within {timeout:g} s", fix)])
    if broker.status == PROBLEM and not is_embedded_broker(settings.broker_url):
        return [broker, workers_unknown]
    workers_limit = 4 * timeout + 2 * BOUND_MARGIN_SECONDS  # the inspector's ~2 timeouts, then active_queues
    late = Check("workers", PROBLEM, f"the workers' answers did not come within {workers_limit:g} s",
                 "check the broker's load and `certctl-notify workers`")
    return [broker, *_bounded(lambda: [_workers(settings, timeout)], workers_limit, [late])]


def _broker(settings, target: str, fix: str, timeout: float) -> Check:
    from certctl_notify.broker_urls import is_embedded_broker, is_redis_tcp

    if is_redis_tcp(settings.broker_url):
        return _redis_broker(settings, target, fix, timeout)
    if is_embedded_broker(settings.broker_url):
        from pathlib import Path

        path = settings.broker_url.split(":///", 1)[-1]
        if path and not Path(path).is_file():
            return Check("broker", WARNING, f"{target} does not exist yet",
                         fix="`certctl-notify dev` creates it when it starts")
    return _kombu_broker(settings, target, fix, timeout)


def _redis_broker(settings, target: str, fix: str, timeout: float) -> Check:
    import redis
    from redis.sentinel import MasterNotFoundError

    from certctl_notify.publish import redis_client

    secrets = _url_passwords(settings.broker_url)
    try:
        client = redis_client(settings.broker_url, timeout=timeout, sentinel_master=settings.broker_sentinel_master)
    except ValueError as exc:  # a URL redis-py cannot read
        return Check("broker", PROBLEM, _first_line(exc, secrets), "correct CERTCTL_BROKER_URL")
    try:
        started = time.monotonic()
        client.ping()
        elapsed = (time.monotonic() - started) * 1000
        version = client.info("server").get("redis_version", "?")
    except redis.AuthenticationError as exc:
        return Check("broker", PROBLEM, f"{target} refused the credentials: {_first_line(exc, secrets)}",
                     "check the user and password in CERTCTL_BROKER_URL")
    except MasterNotFoundError as exc:
        return Check("broker", PROBLEM, f"the sentinels at {target} give no master "
                     f"{settings.broker_sentinel_master!r}: {_first_line(exc, secrets)}",
                     "check CERTCTL_BROKER_SENTINEL_MASTER (their 'sentinel monitor <name> …') and that the "
                     "sentinels in CERTCTL_BROKER_URL run")
    except redis.RedisError as exc:
        return Check("broker", PROBLEM, f"cannot reach {target}: {_first_line(exc, secrets)}", fix)
    finally:
        client.close()
    return Check("broker", OK, f"{target} answered PING in {elapsed:.0f} ms (Redis {version})")


def _kombu_broker(settings, target: str, fix: str, timeout: float) -> Check:
    """RabbitMQ, Redis over a Unix socket and the embedded broker, through the producer app's connection."""
    from certctl_notify.broker_urls import is_amqp, is_redis
    from certctl_notify.publish import DELIVERY_QUEUE, amqp_queue_lengths, make_producer

    secrets = _url_passwords(settings.broker_url)
    app = make_producer(settings.broker_url, sentinel_master=settings.broker_sentinel_master)
    if is_amqp(settings.broker_url):
        options = {"read_timeout": timeout, "write_timeout": timeout}
    elif is_redis(settings.broker_url):
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    else:  # the embedded broker hands its options to SQLAlchemy's create_engine
        options = {}
    try:
        with app.connection_for_write(connect_timeout=timeout, transport_options=options) as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout)
            if is_amqp(settings.broker_url):
                depths = amqp_queue_lengths(conn)  # a round trip per queue
                waiting = depths[DELIVERY_QUEUE]
            else:
                waiting = conn.default_channel.queue_declare(DELIVERY_QUEUE, passive=True).message_count
    except Exception as exc:  # kombu wraps every transport's errors differently: each is this check's finding
        name = type(exc).__name__
        if "AccessRefused" in name or "ACCESS_REFUSED" in str(exc):
            return Check("broker", PROBLEM, f"{target} refused the credentials",
                         "check the user and password in CERTCTL_BROKER_URL")
        return Check("broker", PROBLEM, f"cannot reach {target}: {name}: {_first_line(exc, secrets)}", fix)
    finally:
        app.close()
    return Check("broker", OK, f"{target} answered ({DELIVERY_QUEUE}: {waiting} waiting)")


def _url_passwords(url: str) -> tuple[str, ...]:
    """What may be a secret in each server's URL of a broker URL (``;`` separates Kombu's failover hosts)."""
    from certctl_notify.redact import url_secrets

    return tuple(secret for part in url.split(";") for secret in url_secrets(part))


def _workers(settings, timeout: float) -> Check:
    from api.inspector import workers_view
    from certctl_notify.broker_urls import is_embedded_broker
    from certctl_notify.publish import DELIVERY_QUEUE, make_producer

    if is_embedded_broker(settings.broker_url):
        return Check("workers", SKIPPED, "skipped: the embedded broker cannot carry a ping (`certctl-notify dev` "
                     "runs its own worker)")
    start = "start one with `certctl-notify worker` (on this CERTCTL_BROKER_URL and CERTCTL_DATABASE_URL)"
    app = make_producer(settings.broker_url, sentinel_master=settings.broker_sentinel_master)
    try:
        view = workers_view(app, timeout=timeout)  # never raises
        if not view["workers"]:
            reason = view["reason"] or "no answer"
            if reason.startswith("no worker"):
                return Check("workers", PROBLEM, f"{reason}: nothing delivers alerts", start)
            return Check("workers", PROBLEM, f"the workers cannot be asked ({reason})", "see the broker check")
        names = [worker["name"] for worker in view["workers"]]
        with app.connection_for_write(connect_timeout=timeout) as conn:
            queues = app.control.inspect(destination=names, timeout=timeout, connection=conn).active_queues() or {}
    finally:
        app.close()
    answered = f"{len(names)} worker{'s' * (len(names) != 1)} answered"
    depth = (view["queues"] or {}).get(DELIVERY_QUEUE)
    waiting = "" if depth is None else f"; {depth} waiting in {DELIVERY_QUEUE}"
    if not any(isinstance(queues.get(name), list) for name in names):
        return Check("workers", WARNING, f"{answered}, but none said which queues it consumes{waiting}",
                     "check their --queues include certctl.deliver (`certctl-notify worker` does)")
    consuming = [name for name in names
                 if any(isinstance(q, dict) and q.get("name") == DELIVERY_QUEUE for q in queues.get(name) or ())]
    if not consuming:
        return Check("workers", PROBLEM, f"{answered}, but none consumes {DELIVERY_QUEUE}: nothing delivers "
                     f"alerts{waiting}", start + " (it consumes celery, certctl.deliver and certctl.control)")
    return Check("workers", OK, f"{answered}, {len(consuming)} consume{'s' * (len(consuming) == 1)} "
                 f"{DELIVERY_QUEUE}{waiting}")


# -- channels -----------------------------------------------------------------------------------------------


def _channel_target(name: str, settings) -> str | None:
    """The SMTP host or URL the channel would talk to; None when it is not configured."""
    if name == "Email":
        return settings.smtp.host
    return next(url(settings) for channel, _variable, url in _HTTP_CHANNELS if channel == name)


def _channel_group(name: str, settings, timeout: float) -> Callable[[], list[Check]]:
    def group() -> list[Check]:
        from functools import partial

        from certctl_notify.channels import REQUIRED_VARIABLE
        from certctl_notify.model import Channel

        check = f"channel {name}"
        if not _channel_target(name, settings):
            return [Check(check, SKIPPED, f"not configured ({REQUIRED_VARIABLE[Channel(name)]} unset)")]
        if name == "Email":
            shown = _smtp_shown(settings.smtp)
            probe = partial(_smtp, check, settings.smtp, shown, timeout)
            fix = SMTP_FIX
        else:
            variable, url = next((v, u(settings)) for c, v, u in _HTTP_CHANNELS if c == name)
            shown = _url_shown(url)
            probe = partial(_http, check, variable, url, shown, settings.outbound, timeout)
            fix = f"check {variable}, and that this host may reach {shown} (the channels use no HTTP proxy)"
        # a DNS lookup, then a connect and a handshake (TLS; SMTP's greeting, EHLO, STARTTLS and QUIT)
        limit = 3 * timeout + BOUND_MARGIN_SECONDS
        return _bounded(lambda: [probe()], limit,
                        [Check(check, PROBLEM, f"no answer from {shown} within {limit:g} s", fix)])

    return group


def _url_shown(url: str) -> str:
    """scheme://host:port of a channel URL: its path, query and user info may carry the token."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        port = "?"
    host = parts.hostname or "?"
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}:{port}"


def _smtp_shown(smtp) -> str:
    scheme = "smtps" if smtp.tls == "implicit" else "smtp"
    host = f"[{smtp.host}]" if ":" in smtp.host else smtp.host
    return f"{scheme}://{host}:{smtp.port}"


def _http(check: str, variable: str, url: str, shown: str, outbound, timeout: float) -> Check:
    import socket
    import ssl

    import httpx

    from certctl_notify.channels.http import OutboundHttp
    from certctl_notify.errors import PermanentError, TransientError
    from certctl_notify.redact import url_secrets

    secrets = url_secrets(url)
    try:
        target = httpx.URL(url)
    except httpx.InvalidURL:
        return Check(check, PROBLEM, f"{shown}: not a valid URL", f"correct {variable}")
    guard = OutboundHttp(outbound)
    try:
        # The channels' own DNS lookup and SSRF guard (the address a send would be pinned to), so this
        # check refuses exactly what a delivery would refuse.
        pinned, _meta = guard.pinned(target)
    except PermanentError as exc:
        host = target.host
        reason = _first_line(exc, secrets).removeprefix("refused: ").split("; allow it with")[0]
        return Check(check, PROBLEM, f"{shown}: the channels' SSRF guard refuses it: {reason}",
                     f"if {host} is meant, add it (or its address or CIDR) to CERTCTL_OUTBOUND_ALLOW; "
                     f"otherwise correct {variable}")
    except TransientError as exc:
        return Check(check, PROBLEM, f"{shown}: {_first_line(exc, secrets)}",
                     f"check {variable} and this host's DNS")
    finally:
        guard.close()
    address, port = pinned.host, target.port or (443 if target.scheme == "https" else 80)
    fix = f"check {variable}, and that this host may reach {shown} (the channels use no HTTP proxy)"
    try:
        with socket.create_connection((address, port), timeout=timeout) as sock:
            if target.scheme != "https":
                return Check(check, OK, f"{shown} accepts connections (at {address}; nothing sent)")
            context = httpx.create_ssl_context(trust_env=False)  # what the channels' client verifies with
            with context.wrap_socket(sock, server_hostname=target.host) as tls:
                protocol = tls.version()
    except ssl.SSLCertVerificationError as exc:
        return Check(check, PROBLEM, f"{shown}: its TLS certificate is not trusted ({exc.verify_message})",
                     f"the channels verify against the public CAs (certifi): give {target.host} a certificate "
                     f"they trust, or correct {variable}")
    except ssl.SSLError as exc:
        return Check(check, PROBLEM, f"{shown}: TLS handshake failed ({exc.reason or type(exc).__name__})", fix)
    except TimeoutError:
        return Check(check, PROBLEM, f"no answer from {shown} (at {address}) within {timeout:g} s", fix)
    except OSError as exc:
        reason = exc.strerror or _first_line(exc, secrets)
        return Check(check, PROBLEM, f"cannot connect to {shown} (at {address}): {reason}", fix)
    return Check(check, OK, f"{shown} completed a TLS handshake ({protocol}, certificate verified; nothing sent)")


def _smtp(check: str, smtp, shown: str, timeout: float) -> Check:
    import smtplib
    import socket
    import ssl

    fix = SMTP_FIX
    secrets = (smtp.password,) if smtp.password else ()
    try:
        socket.getaddrinfo(smtp.host, smtp.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return Check(check, PROBLEM, f"cannot resolve {smtp.host}: {exc}", "check CERTCTL_SMTP_HOST and this "
                     "host's DNS")
    try:
        context = ssl.create_default_context(cafile=smtp.ca_file)
    except (OSError, ValueError) as exc:
        return Check(check, PROBLEM, f"CERTCTL_SMTP_CA_FILE cannot be loaded: {exc}", "correct CERTCTL_SMTP_CA_FILE")
    client = (smtplib.SMTP_SSL(timeout=timeout, context=context) if smtp.tls == "implicit"
              else smtplib.SMTP(timeout=timeout))
    steps = []
    try:
        code, _greeting = client.connect(smtp.host, smtp.port)  # reads the greeting
        if code != 220:
            return Check(check, PROBLEM, f"{shown} greeted with {code}, not 220", fix)
        steps.append("220")
        client.ehlo_or_helo_if_needed()
        steps.append("EHLO")
        if smtp.tls == "starttls":
            if not client.has_extn("starttls"):
                return Check(check, PROBLEM, f"{shown} offers no STARTTLS, and CERTCTL_SMTP_TLS is starttls",
                             "use CERTCTL_SMTP_TLS=implicit (port 465) if the relay speaks TLS, or none for a "
                             "relay on a trusted network")
            client.starttls(context=context)
            client.ehlo()
            steps.append("STARTTLS")
        if smtp.username and smtp.password and not client.has_extn("auth"):
            return Check(check, PROBLEM, f"{shown} offers no AUTH, and CERTCTL_SMTP_USERNAME is set",
                         "unset CERTCTL_SMTP_USERNAME and CERTCTL_SMTP_PASSWORD, or use a relay that takes them")
        client.quit()
    except ssl.SSLCertVerificationError as exc:
        return Check(check, PROBLEM, f"{shown}: its TLS certificate is not trusted ({exc.verify_message})",
                     "trust its CA with CERTCTL_SMTP_CA_FILE")
    except TimeoutError:
        after = ", ".join(steps) or "connecting"
        return Check(check, PROBLEM, f"no answer from {shown} within {timeout:g} s (after {after})", fix)
    except smtplib.SMTPServerDisconnected as exc:
        if isinstance(exc.__context__, TimeoutError):  # smtplib reports a read timeout as a disconnection
            after = ", ".join(steps) or "connecting"
            return Check(check, PROBLEM, f"no answer from {shown} within {timeout:g} s (after {after})", fix)
        return Check(check, PROBLEM, f"{shown} closed the connection after {', '.join(steps) or 'connecting'}", fix)
    except smtplib.SMTPResponseException as exc:
        return Check(check, PROBLEM, f"{shown} answered {exc.smtp_code} after {', '.join(steps)}", fix)
    except (OSError, smtplib.SMTPException) as exc:
        from certctl_notify.redact import redact

        reason = getattr(exc, "strerror", None) or redact(str(exc) or type(exc).__name__, secrets)
        return Check(check, PROBLEM, f"cannot talk to {shown}: {reason}", fix)
    finally:
        client.close()
    return Check(check, OK, f"{shown} answered {', '.join(steps)} and QUIT (nothing sent)")
