"""``certctl-notify``: the operator's command line.

Commands that need the API server or the worker import them when they run, so ``certctl-notify
--help`` stays fast and the core keeps no Flask or worker import at module level.
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from certctl_notify.config import Settings, load_settings
from certctl_notify.errors import ConfigError


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


def _api_options(command):
    """--url and --key for commands that talk to the API (or CERTCTL_API_URL / CERTCTL_API_KEY)."""
    command = click.option("--key", envvar="CERTCTL_API_KEY", help="API key (env CERTCTL_API_KEY).")(command)
    return click.option("--url", envvar="CERTCTL_API_URL", default="http://127.0.0.1:8080", show_default=True,
                        help="API base URL (env CERTCTL_API_URL).")(command)


def _api(url: str, key: str | None):
    from certctl_notify.apiclient import ApiClient

    return ApiClient(url, key)


def _call(fn, *args, **kwargs):
    from certctl_notify.apiclient import ApiClientError

    try:
        return fn(*args, **kwargs)
    except ApiClientError as exc:
        raise click.ClickException(str(exc)) from None


@main.command("list")
@_api_options
@click.option("--status", type=click.Choice(["pending", "sent", "failed", "dead", "read"]))
@click.option("--channel")
@click.option("--type", "alert_type")
@click.option("--page", type=int, default=1, show_default=True)
@click.option("--per-page", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def list_(url, key, status, channel, alert_type, page, per_page, as_json) -> None:
    """List notifications, newest first (e.g. --status dead for the dead letters)."""
    body = _call(_api(url, key).get, "/api/v1/notifications", status=status, channel=channel, type=alert_type,
                 page=page, per_page=per_page)
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    for row in body["data"]:
        error = (row["last_error"] or "")[:60]
        click.echo(f"{row['id']}  {row['status']:<7} {row['channel']:<9} {row['type']:<18} "
                   f"attempt {row['retry_count']}/{row['max_attempts']}  {error}")
    click.echo(f"page {body['page']}: {len(body['data'])} of {body['total']}")


@main.command()
@_api_options
@click.argument("notification_id")
def show(url, key, notification_id: str) -> None:
    """Print one notification and its attempt history as JSON."""
    click.echo(json.dumps(_call(_api(url, key).get, f"/api/v1/notifications/{notification_id}"), indent=2))


@main.command()
@_api_options
def stats(url, key) -> None:
    """Counts per status, oldest pending age and retries due."""
    for name, value in _call(_api(url, key).get, "/api/v1/stats/summary").items():
        click.echo(f"{name:<28} {value}")


@main.command()
@_api_options
@click.argument("ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Requeue every dead row (a rate-limited bulk job).")
@click.option("--channel", help="With --all-dead: only this channel.")
@click.option("--dry-run", is_flag=True, help="With --all-dead: only count.")
def requeue(url, key, ids, all_dead, channel, dry_run) -> None:
    """Requeue dead or failed notifications by id, or --all-dead as a bulk job with progress."""
    api = _api(url, key)
    if all_dead == bool(ids):
        raise click.UsageError("give notification ids or --all-dead, not both")
    if all_dead:
        _bulk_requeue(api, channel, dry_run)
        return
    from certctl_notify.apiclient import ApiClientError

    refused = 0
    for notification_id in ids:
        try:
            api.post(f"/api/v1/notifications/{notification_id}/requeue")
            click.echo(f"{notification_id}: requeued")
        except ApiClientError as exc:
            if exc.status not in (404, 409):
                raise click.ClickException(str(exc)) from None
            refused += 1
            click.echo(f"{notification_id}: refused: {exc}", err=True)
    if refused:
        sys.exit(1)


def _bulk_requeue(api, channel: str | None, dry_run: bool) -> None:
    body = {"status": "dead", **({"channel": channel} if channel else {})}
    if dry_run:
        matched = _call(api.post, "/api/v1/notifications/requeue", {**body, "dry_run": True})["matched"]
        click.echo(f"{matched} dead notifications would be requeued")
        return
    job = _call(api.post, "/api/v1/notifications/requeue", body)
    click.echo(f"bulk requeue {job['job_id']}: {job['matched']} rows at {job['rate_per_second']:g}/s")
    done = 0
    with click.progressbar(length=max(job["matched"], 1), label="requeueing", file=sys.stderr) as bar:
        while True:
            state = _call(api.get, f"/api/v1/requeue-jobs/{job['job_id']}")
            progress = state["requeued"] + state["skipped"]
            bar.update(progress - done)
            done = progress
            if state["status"] != "running":
                break
            time.sleep(0.5)
    click.echo(f"{state['status']}: {state['requeued']} requeued, {state['skipped']} skipped (changed meanwhile)")


@main.command()
@_api_options
@click.option("--type", "alert_type", required=True, help="ExpirationWarning, RenewalFailure, …")
@click.option("--channel", "channels", multiple=True, required=True, help="Email, Webhook, Slack, …")
@click.option("--message", required=True)
@click.option("--recipient")
@click.option("--subject")
@click.option("--severity")
@click.option("--certificate-id")
@click.option("--dedupe-key")
def enqueue(url, key, alert_type, channels, message, recipient, subject, severity, certificate_id,
            dedupe_key) -> None:
    """Enqueue one alert (one row per channel) through the API and print the rows."""
    fields = {"type": alert_type, "channels": list(channels), "message": message, "recipient": recipient,
              "subject": subject, "severity": severity, "certificate_id": certificate_id, "dedupe_key": dedupe_key}
    body = _call(_api(url, key).post, "/api/v1/notifications", {k: v for k, v in fields.items() if v is not None})
    for row, created in zip(body["data"], body["created"], strict=True):
        click.echo(f"{row['id']} {row['channel']} {'created' if created else 'existing'}")


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


@main.command("test-channel")
@click.argument("channel")
@click.option("--to", "recipient", default="", help="Recipient (an address for Email).")
@click.option("--wait", type=float, default=60.0, show_default=True, help="Seconds to wait for the outcome.")
def test_channel(channel: str, recipient: str, wait: float) -> None:
    """Send one test alert through the real pipeline (broker, worker, channel) and print the outcome."""
    from certctl_notify import store
    from certctl_notify.client import enqueue_alert
    from certctl_notify.errors import ValidationError

    settings = _settings()
    sessions = _sessions(settings)
    fields = {"type": "ExpirationWarning", "channel": channel, "recipient": recipient, "severity": "info",
              "subject": "certctl-notify test alert", "message": "This is a test alert sent by "
              "`certctl-notify test-channel`. If you can read it, the channel works."}
    try:
        [result] = enqueue_alert(sessions, _dispatcher(settings), fields)
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


@main.command()
@_api_options
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def workers(url, key, as_json: bool) -> None:
    """Workers, their active/reserved/scheduled tasks and the queue depths (exit 1 when unavailable)."""
    view = _call(_api(url, key).get, "/api/v1/workers")
    click.echo(json.dumps(view, indent=2) if as_json else _workers_table(view))
    if view["status"] != "ok":
        sys.exit(1)


def _workers_table(view: dict) -> str:
    def shown(value) -> str:
        return "?" if value is None else str(value)

    lines = [] if view["workers"] else [f"workers unavailable: {view['reason']}"]
    if view["workers"]:
        lines.append(f"{'WORKER':<40} {'POOL':<12} {'PROCESSED':>9} {'ACTIVE':>6} {'RESERVED':>8} {'SCHEDULED':>9}")
    for w in view["workers"]:
        pool = f"{shown(w['pool']['kind'])}/{shown(w['pool']['size'])}"
        active = None if w["active"] is None else len(w["active"])
        lines.append(f"{w['name']:<40} {pool:<12} {w['processed']:>9} {shown(active):>6} "
                     f"{shown(w['reserved']):>8} {shown(w['scheduled']):>9}")
        for task in w["active"] or ():
            what = (f"{task['notification_id']} attempt {task['attempt']}" if task["notification_id"]
                    else shown(task["task"]))
            lines.append(f"  running {what} for {shown(task['runtime_seconds'])} s (pid {shown(task['worker_pid'])})")
    if view["queues"] is not None:
        lines.append("queues: " + ", ".join(f"{name} {n}" for name, n in view["queues"].items()))
    return "\n".join(lines)


@main.command(context_settings={"ignore_unknown_options": True})
@click.option("--port", type=int, help="Port (default CERTCTL_FLOWER_PORT or 5555).")
@click.argument("flower_args", nargs=-1, type=click.UNPROCESSED)
def flower(port: int | None, flower_args: tuple[str, ...]) -> None:
    """Run Flower, the Celery monitor, on our broker (extra arguments go to ``celery flower``)."""
    from certctl_notify.config import child_environment

    settings = _settings()
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
