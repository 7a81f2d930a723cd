"""Commands that work on the database and broker directly (no API): migrate, sweep, recount, purge,
worker, dev, test-channel, flower."""

from __future__ import annotations

import os
import sys
import time

import click

from cli.common import dispatcher_for, sessions_for, settings_or_exit


@click.command()
def migrate() -> None:
    """Bring the database schema to the latest revision (safe to run repeatedly)."""
    from certctl_notify.migrate import upgrade

    settings = settings_or_exit()
    upgrade(settings.database_url)
    click.echo("database is at the latest schema revision")


@click.command()
def sweep() -> None:
    """Run one sweep tick now: re-dispatch overdue retries, lost intake and abandoned attempts."""
    from certctl_notify.sweep import sweep_once

    settings = settings_or_exit()
    report = sweep_once(sessions_for(settings), dispatcher_for(settings), settings.sweep)
    if report.locked_out:
        click.echo("another sweep is running; nothing done")
        return
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(report.redispatched.items())) or "nothing due"
    click.echo(f"re-dispatched {report.total} ({detail}); publish failures: {report.publish_failures}")
    if report.publish_failures:
        sys.exit(1)


@click.command()
def recount() -> None:
    """Recount the rows per status and repair the counts the API, /metrics and the console read.

    They are kept exact by database triggers; this is for after a restore or a manual edit that went
    around them. On PostgreSQL it holds off writes for one scan of the notifications table.
    """
    from certctl_notify import store

    settings = settings_or_exit()
    with sessions_for(settings).begin() as session:
        before, after = store.recount(session)
    for status in after:
        change = "" if before[status] == after[status] else f" (was {before[status]:,})"
        click.echo(f"{status:8} {after[status]:>12,}{change}")
    click.echo("counts were right" if before == after else "counts repaired")


@click.command()
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; change nothing.")
def purge(dry_run: bool) -> None:
    """Delete the sent, read and dead notifications past their retention now, with their attempts.

    Beat does this every CERTCTL_RETENTION_INTERVAL within a time budget; this runs until nothing is
    due (in short batches, pausing between them, so it can run beside a busy service).
    """
    from certctl_notify.retention import count_due
    from certctl_notify.retention import purge as purge_expired

    settings = settings_or_exit()
    sessions = sessions_for(settings)
    report = count_due(sessions, settings.retention) if dry_run else purge_expired(sessions, settings.retention)
    ages = {"sent": settings.retention.delivered_seconds, "read": settings.retention.delivered_seconds,
            "dead": settings.retention.dead_seconds}
    for status, age in ages.items():
        if status in report.kept:
            click.echo(f"{status:8} {'kept':>12}  (retention 0: kept for ever)")
        else:
            click.echo(f"{status:8} {report.purged[status]:>12,}  (last changed over {_days(age)} ago)")
    if dry_run:
        click.echo(f"would delete {report.total:,} notifications with their attempts; nothing changed")
    else:
        click.echo(f"deleted {report.total:,} notifications with their attempts in {report.batches} batches, "
                   f"{report.seconds:.1f} s")


def _days(seconds: float) -> str:
    return f"{seconds / 86400:g} days" if seconds >= 86400 else f"{seconds:g} s"


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--beat/--no-beat", default=False, help="Also run beat (the sweep) in this process.")
@click.argument("celery_args", nargs=-1, type=click.UNPROCESSED)
def worker(beat: bool, celery_args: tuple[str, ...]) -> None:
    """Run a Celery worker on both queues (extra arguments go to ``celery worker``)."""
    settings = settings_or_exit()
    args = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "--pool", "prefork",
            "--concurrency", str(settings.worker.concurrency), "--queues", "celery,certctl.deliver,certctl.control"]
    if beat:
        args += ["--beat", "--schedule", str(settings.data_dir / "celerybeat-schedule")]
    os.execv(sys.executable, args + list(celery_args))


@click.command()
@click.option("--demo", is_flag=True, help="Also start a local receiver and enqueue demo alerts.")
@click.option("--port", type=int, help="API port (default CERTCTL_API_PORT or 8080).")
def dev(demo: bool, port: int | None) -> None:
    """The embedded all-in-one: SQLite data, SQLite broker, API + worker + beat in one command."""
    from api.devserver import run_dev

    sys.exit(run_dev(demo=demo, port=port))


@click.command("test-channel")
@click.argument("channel")
@click.option("--to", "recipient", default="", help="Recipient (an address for Email).")
@click.option("--wait", type=float, default=60.0, show_default=True, help="Seconds to wait for the outcome.")
def test_channel(channel: str, recipient: str, wait: float) -> None:
    """Send one test alert through the real pipeline (broker, worker, channel) and print the outcome."""
    from certctl_notify import store
    from certctl_notify.errors import ValidationError
    from certctl_notify.intake import enqueue_alert

    settings = settings_or_exit()
    sessions = sessions_for(settings)
    fields = {"type": "ExpirationWarning", "channel": channel, "recipient": recipient, "severity": "info",
              "subject": "certctl-notify test alert", "message": "This is a test alert sent by "
              "`certctl-notify test-channel`. If you can read it, the channel works."}
    try:
        [result] = enqueue_alert(sessions, dispatcher_for(settings), fields)
    except ValidationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"sent test alert {result.row.id} to the queue; waiting for a worker…")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with sessions.begin() as session:
            row = store.get(session, result.row.id)
        if row.status == "sent":
            click.echo(f"delivered via {channel} on attempt {row.retry_count + 1}")
            return
        if row.status in ("dead", "failed"):
            hint = " (it will be retried)" if row.status == "failed" else ""
            raise click.ClickException(f"{row.status}{hint}: {row.last_error}")
        time.sleep(0.2)
    raise click.ClickException(f"no outcome within {wait:g}s: is a worker running? (`certctl-notify worker`)")


@click.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, help="Port (default CERTCTL_FLOWER_PORT or 5555).")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port: int | None, flower_args: tuple[str, ...]) -> None:
    """Run Flower, the Celery monitor, on our broker (extra arguments go to ``celery flower``)."""
    from certctl_notify.environment import child_environment

    settings = settings_or_exit()
    args = [sys.executable, "-m", "celery", "-A", "workers.app", "flower",
            f"--port={port or settings.monitor.flower_port}", "--purge_offline_workers=120"]
    overrides = {}
    if settings.monitor.flower_basic_auth:
        # Flower reads its own FLOWER_BASIC_AUTH; passed that way the password stays out of `ps`.
        overrides["FLOWER_BASIC_AUTH"] = ",".join(settings.monitor.flower_basic_auth)
    else:
        args.append("--address=127.0.0.1")
        click.echo("no CERTCTL_FLOWER_BASIC_AUTH: Flower listens on 127.0.0.1 only, without a password", err=True)
    os.execve(sys.executable, args + list(flower_args), child_environment(overrides))
