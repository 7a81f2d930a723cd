"""Commands that work on the database and broker directly (no API): migrate, sweep, recount, purge,
worker, dev, test-channel, flower."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

import click

from certctl_notify.vocabulary import Channel
from cli.common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    CliError,
    choice_of,
    dispatcher_for,
    sessions_for,
    settings_or_exit,
)
from cli.output import json_option, note, print_json


@click.command()
@json_option
def migrate(as_json: bool) -> None:
    """Bring the database schema to the latest revision (safe to run repeatedly).

    --json: {"revision_before": "0011…" or null, "revision": "0012…", "changed": true}.
    """
    from certctl_notify.migrate import current, upgrade

    settings = settings_or_exit()
    before = current(settings.database_url)
    upgrade(settings.database_url)
    after = current(settings.database_url)
    if as_json:
        print_json({"revision_before": before, "revision": after, "changed": before != after})
    elif before == after:
        click.echo(f"database is at the latest schema revision ({after}); nothing to do")
    else:
        click.echo(f"database is at the latest schema revision ({after}; was {before or 'empty'})")


@click.command()
@json_option
def sweep(as_json: bool) -> None:
    """Run one sweep tick now: re-dispatch overdue retries, lost intake and abandoned attempts.

    --json: {"locked_out": false, "redispatched": {"overdue": 2, …}, "total": 2, "publish_failures": 0};
    exit 1 when a publish failed.
    """
    from certctl_notify.sweep import sweep_once

    settings = settings_or_exit()
    report = sweep_once(sessions_for(settings), dispatcher_for(settings), settings.sweep)
    if as_json:
        print_json({"locked_out": report.locked_out, "redispatched": dict(report.redispatched),
                    "total": report.total, "publish_failures": report.publish_failures})
    elif report.locked_out:
        click.echo("another sweep is running; nothing done")
    else:
        detail = ", ".join(f"{n} {reason}" for reason, n in sorted(report.redispatched.items())) or "nothing due"
        click.echo(f"re-dispatched {report.total} ({detail}); publish failures: {report.publish_failures}")
    if report.publish_failures:
        sys.exit(EXIT_FAILURE)


@click.command()
@json_option
def recount(as_json: bool) -> None:
    """Recount the rows per status and repair the counts the API, /metrics and the console read.

    They are kept exact by database triggers; this is for after a restore or a manual edit that went
    around them. On PostgreSQL it holds off writes for one scan of the notifications table.
    --json: {"before": {"pending": …}, "after": {…}, "repaired": false}.
    """
    from certctl_notify import store

    settings = settings_or_exit()
    with sessions_for(settings).begin() as session:
        before, after = store.recount(session)
    if as_json:
        print_json({"before": dict(before), "after": dict(after), "repaired": before != after})
        return
    for status in after:
        change = "" if before[status] == after[status] else f" (was {before[status]:,})"
        click.echo(f"{status:8} {after[status]:>12,}{change}")
    click.echo("counts were right" if before == after else "counts repaired")


@click.command()
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; change nothing.")
@json_option
def purge(dry_run: bool, as_json: bool) -> None:
    """Delete the sent, read and dead notifications past their retention now, with their attempts.

    Beat does this every CERTCTL_RETENTION_INTERVAL within a time budget; this runs until nothing is
    due (in short batches, pausing between them, so it can run beside a busy service), counting the
    rows due first and showing a progress bar with ETA on stderr. Ctrl-C stops it after the batch
    under way (the batches done stay deleted; exit 130); a second Ctrl-C stops at once, rolling that
    batch back.

    --json: {"dry_run": false, "purged": {"sent": 120, "read": 3, "dead": 0}, "kept": [], "total": 123,
    "batches": 4, "seconds": 0.4, "stopped": false, "retention_seconds": {…}}; a dry run has "due"
    instead of "purged" and no batches, seconds or stopped.
    """
    from certctl_notify.retention import count_due

    settings = settings_or_exit()
    sessions = sessions_for(settings)
    ages = {"sent": settings.retention.delivered_seconds, "read": settings.retention.delivered_seconds,
            "dead": settings.retention.dead_seconds}
    due = count_due(sessions, settings.retention)
    report = due if dry_run else _purge_with_progress(sessions, settings.retention, due.total)
    if as_json:
        document = {"dry_run": dry_run, "due" if dry_run else "purged": report.purged, "kept": list(report.kept),
                    "total": report.total, "retention_seconds": ages}
        if not dry_run:
            document.update(batches=report.batches, seconds=round(report.seconds, 3), stopped=report.stopped)
        print_json(document)
    else:
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
    if not dry_run and report.stopped:
        left = max(due.total - report.total, 0)
        note(f"stopped on Ctrl-C after a whole batch: the {report.total:,} rows deleted stay deleted; about "
             f"{left:,} are still due (the next purge, or beat's, goes on)")
        sys.exit(EXIT_INTERRUPTED)


def _purge_with_progress(sessions, retention, total: int):
    """`retention.purge` with a progress bar over ``total`` rows; the first Ctrl-C asks it to stop after
    the batch under way (a flag its ``stop`` hook reads), the second interrupts at once."""
    from certctl_notify.retention import purge as purge_expired

    asked_to_stop = threading.Event()
    deleted = 0

    def on_sigint(signum, frame):
        if asked_to_stop.is_set():
            raise KeyboardInterrupt
        asked_to_stop.set()  # nothing is printed here: the progress bar may be writing to stderr

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_sigint) if in_main_thread else None
    try:
        with click.progressbar(length=max(total, 1), label="purging", file=sys.stderr, show_eta=True,
                               show_pos=True) as bar:
            def on_batch(status: str, count: int) -> None:
                nonlocal deleted
                deleted += count
                bar.update(count)

            return purge_expired(sessions, retention, on_batch=on_batch, stop=asked_to_stop.is_set)
    except KeyboardInterrupt:
        raise CliError(f"stopped at once on a second Ctrl-C: the batch under way was rolled back; the {deleted:,} "
                       "rows of the batches before it stay deleted", EXIT_INTERRUPTED) from None
    finally:
        if in_main_thread:
            signal.signal(signal.SIGINT, previous)


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
@click.argument("channel", type=choice_of(Channel))
@click.option("--to", "recipient", default="", help="Recipient (an address for Email).")
@click.option("--wait", type=float, default=60.0, show_default=True, help="Seconds to wait for the outcome.")
@json_option
def test_channel(channel: str, recipient: str, wait: float, as_json: bool) -> None:
    """Send one test alert through the real pipeline (broker, worker, channel) and print the outcome.

    --json: {"id": "notif_…", "channel": "Webhook", "status": "sent", "attempt": 1} once delivered; a
    failure is an error on stderr (exit 1).
    """
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
        raise CliError(str(exc)) from None
    note(f"sent test alert {result.row.id} to the queue; waiting for a worker…")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with sessions.begin() as session:
            row = store.get(session, result.row.id)
        if row.status == "sent":
            if as_json:
                print_json({"id": row.id, "channel": row.channel, "status": row.status,
                            "attempt": row.retry_count + 1})
            else:
                click.echo(f"delivered via {channel} on attempt {row.retry_count + 1}")
            return
        if row.status in ("dead", "failed"):
            hint = " (it will be retried)" if row.status == "failed" else ""
            raise CliError(f"{row.status}{hint}: {row.last_error}")
        time.sleep(0.2)
    raise CliError(f"no outcome within {wait:g}s: is a worker running? (`certctl-notify worker`)")


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
