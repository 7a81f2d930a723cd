"""Commands that talk to the API (``--url``, ``--key`` or CERTCTL_API_URL / CERTCTL_API_KEY)."""

from __future__ import annotations

import json
import sys
import time

import click

from cli.common import api_client, api_options, call


@click.command("list")
@api_options
@click.option("--status", type=click.Choice(["pending", "sent", "failed", "dead", "read"]))
@click.option("--channel")
@click.option("--type", "alert_type")
@click.option("--page", type=int, default=1, show_default=True)
@click.option("--per-page", type=int, default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def list_(url, key, status, channel, alert_type, page, per_page, as_json) -> None:
    """List notifications, newest first (e.g. --status dead for the dead letters)."""
    body = call(api_client(url, key).get, "/api/v1/notifications", status=status, channel=channel, type=alert_type,
                 page=page, per_page=per_page)
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    for row in body["data"]:
        error = (row["last_error"] or "")[:60]
        click.echo(f"{row['id']}  {row['status']:<7} {row['channel']:<9} {row['type']:<18} "
                   f"attempt {row['retry_count']}/{row['max_attempts']}  {error}")
    total = f"{body['total']:,}" + ("" if body.get("total_exact", True) else "+")
    click.echo(f"page {body['page']}: {len(body['data'])} of {total}")


@click.command()
@api_options
@click.argument("notification_id")
def show(url, key, notification_id: str) -> None:
    """Print one notification and its attempt history as JSON."""
    click.echo(json.dumps(call(api_client(url, key).get, f"/api/v1/notifications/{notification_id}"), indent=2))


@click.command()
@api_options
def stats(url, key) -> None:
    """Counts per status, oldest pending age and retries due."""
    for name, value in call(api_client(url, key).get, "/api/v1/stats/summary").items():
        click.echo(f"{name:<28} {value}")


@click.command()
@api_options
@click.argument("ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Requeue every dead row (a rate-limited bulk job).")
@click.option("--channel", help="With --all-dead: only this channel.")
@click.option("--dry-run", is_flag=True, help="With --all-dead: only count.")
def requeue(url, key, ids, all_dead, channel, dry_run) -> None:
    """Requeue dead or failed notifications by id, or --all-dead as a bulk job with progress."""
    api = api_client(url, key)
    if all_dead == bool(ids):
        raise click.UsageError("give notification ids or --all-dead, not both")
    if all_dead:
        _bulk_requeue(api, channel, dry_run)
        return
    from certctl_notify.errors import ApiClientError

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
        matched = call(api.post, "/api/v1/notifications/requeue", {**body, "dry_run": True})["matched"]
        click.echo(f"{matched} dead notifications would be requeued")
        return
    job = call(api.post, "/api/v1/notifications/requeue", body)
    pace = f"at {job['rate_per_second']:g}/s" if job["rate_per_second"] else "unthrottled"
    click.echo(f"bulk requeue {job['job_id']}: {job['matched']} rows {pace}")
    done = 0
    with click.progressbar(length=max(job["matched"], 1), label="requeueing", file=sys.stderr) as bar:
        while True:
            state = call(api.get, f"/api/v1/requeue-jobs/{job['job_id']}")
            progress = state["requeued"] + state["skipped"]
            bar.update(progress - done)
            done = progress
            if state["status"] != "running":
                break
            time.sleep(0.5)
    click.echo(f"{state['status']}: {state['requeued']} requeued, {state['skipped']} skipped (changed meanwhile)")


@click.command()
@api_options
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
    body = call(api_client(url, key).post, "/api/v1/notifications", {k: v for k, v in fields.items() if v is not None})
    for row, created in zip(body["data"], body["created"], strict=True):
        click.echo(f"{row['id']} {row['channel']} {'created' if created else 'existing'}")


@click.command()
@api_options
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON.")
def workers(url, key, as_json: bool) -> None:
    """Workers, their active/reserved/scheduled tasks and the queue depths (exit 1 when unavailable)."""
    view = call(api_client(url, key).get, "/api/v1/workers")
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
