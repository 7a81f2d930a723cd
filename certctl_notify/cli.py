"""``certctl-notify``: the operator's command line.

Commands that need the API server or the worker import them when they run, so ``certctl-notify
--help`` stays fast and the core keeps no Flask or worker import at module level.
"""

from __future__ import annotations

import getpass
import json
import os
import sys

import click

from certctl_notify.config import Settings, load_settings
from certctl_notify.errors import ConfigError, ValidationError


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _sessions(settings: Settings):
    from certctl_notify.db import make_engine, make_sessions

    return make_sessions(make_engine(settings.database_url))


def _dispatcher(settings: Settings):
    from certctl_notify.dispatch import CeleryDispatcher
    from certctl_notify.producer import make_producer

    return CeleryDispatcher(make_producer(settings.broker_url))


@click.group()
def main() -> None:
    """Deliver certificate alerts with retries and an operator-visible dead-letter queue."""


@main.command()
def migrate() -> None:
    """Bring the database schema to the latest revision (safe to run repeatedly)."""
    from certctl_notify.migrate import upgrade

    settings = _settings()
    upgrade(settings.database_url)
    click.echo("database is at the latest schema revision")


@main.command()
def sweep() -> None:
    """Run one sweep tick now: re-dispatch overdue retries, lost intake and abandoned attempts."""
    from certctl_notify.sweep import sweep_once

    settings = _settings()
    report = sweep_once(_sessions(settings), _dispatcher(settings), settings.sweep)
    if report.locked_out:
        click.echo("another sweep is running; nothing done")
        return
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(report.redispatched.items())) or "nothing due"
    click.echo(f"re-dispatched {report.total} ({detail}); publish failures: {report.publish_failures}")
    if report.publish_failures:
        sys.exit(1)


@main.command()
@click.argument("ids", nargs=-1, required=True)
def requeue(ids: tuple[str, ...]) -> None:
    """Requeue dead or failed notifications by id, each with a fresh attempt budget."""
    from certctl_notify import client

    settings = _settings()
    sessions, dispatcher = _sessions(settings), _dispatcher(settings)
    refused = 0
    with click.progressbar(ids, label="requeueing", file=sys.stderr) if len(ids) > 20 else _plain(ids) as bar:
        for notification_id in bar:
            try:
                client.requeue(sessions, dispatcher, notification_id, actor=client.Actor(f"cli:{getpass.getuser()}"))
                click.echo(f"{notification_id}: requeued")
            except (client.NotFound, client.WrongState) as exc:
                refused += 1
                click.echo(f"{notification_id}: refused: {exc}", err=True)
    if refused:
        sys.exit(1)


class _plain:
    def __init__(self, items):
        self.items = items

    def __enter__(self):
        return self.items

    def __exit__(self, *exc):
        return False


@main.command()
@click.option("--type", "alert_type", required=True, help="ExpirationWarning, RenewalFailure, …")
@click.option("--channel", "channels", multiple=True, required=True, help="Email, Webhook, Slack, …")
@click.option("--message", required=True)
@click.option("--recipient", default="")
@click.option("--subject")
@click.option("--severity")
@click.option("--certificate-id")
@click.option("--dedupe-key")
def enqueue(alert_type, channels, message, recipient, subject, severity, certificate_id, dedupe_key) -> None:
    """Enqueue one alert (one row per channel) and print the rows."""
    from certctl_notify.client import enqueue_alert

    settings = _settings()
    fields = {"type": alert_type, "channels": list(channels), "message": message, "recipient": recipient,
              "subject": subject, "severity": severity, "certificate_id": certificate_id, "dedupe_key": dedupe_key}
    try:
        results = enqueue_alert(_sessions(settings), _dispatcher(settings),
                                {k: v for k, v in fields.items() if v is not None})
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    for result in results:
        click.echo(f"{result.row.id} {result.row.channel} {'created' if result.created else 'existing'}")


@main.command()
@click.argument("notification_id")
def show(notification_id: str) -> None:
    """Print one notification and its attempt history as JSON."""
    from api import serialize
    from certctl_notify import store

    settings = _settings()
    with _sessions(settings).begin() as session:
        row = store.get(session, notification_id)
        history = store.list_attempts(session, notification_id)
    if row is None:
        raise click.ClickException(f"notification {notification_id} does not exist")
    data = serialize.notification(row, max_attempts=settings.retry.max_attempts)
    data["attempts"] = [serialize.attempt(a) for a in history]
    click.echo(json.dumps(data, indent=2))


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--beat/--no-beat", default=False, help="Also run beat (the sweep) in this process.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(beat: bool, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker on both queues (extra arguments go to ``celery worker``)."""
    settings = _settings()
    args = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "prefork",
            "--concurrency", str(settings.worker.concurrency), "--queues", "celery,certctl.deliver"]
    if beat:
        args += ["--beat", "--schedule", str(settings.data_dir / "celerybeat-schedule")]
    os.execv(sys.executable, args + list(celery_args))


@main.command()
@click.option("--demo", is_flag=True, help="Also start a local receiver and enqueue demo alerts.")
@click.option("--port", type=int, help="API port (default CERTCTL_API_PORT or 8080).")
def dev(demo: bool, port: int | None) -> None:
    """The embedded all-in-one: SQLite data, SQLite broker, API + worker + beat in one command."""
    from api.devserver import run_dev

    sys.exit(run_dev(demo=demo, port=port))
