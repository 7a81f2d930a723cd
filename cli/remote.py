"""Commands that talk to the API (``--url``, ``--key`` or CERTCTL_API_URL / CERTCTL_API_KEY).

With ``--json`` each prints the API's own JSON (``requeue ID…`` a document of its own, see `requeue`).
"""

from __future__ import annotations

import select
import sys
import time
from datetime import UTC, datetime

import click

from certctl_notify.display import attempt_number, fmt_seconds, fmt_time
from certctl_notify.vocabulary import AlertType, Channel, Severity, Status
from cli import output
from cli.common import (
    EXIT_CONFLICT,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    CliError,
    api_client,
    api_options,
    api_path,
    call,
    choice_of,
)
from cli.output import Column, json_option, note, print_json, relative, styled

#: Seconds a bulk requeue interrupted with Ctrl-C waits for an answer on a stdin that is not a terminal.
PIPED_ANSWER_SECONDS = 5.0
#: Seconds between two polls of a bulk requeue's progress.
POLL_SECONDS = 0.5


# --- list -----------------------------------------------------------------------------------------


@click.command("list")
@api_options
@click.option("--status", type=choice_of(Status))
@click.option("--channel", type=choice_of(Channel))
@click.option("--type", "alert_type", type=choice_of(AlertType))
@click.option("--certificate-id", help="Only this certificate's alerts.")
@click.option("--q", "q", metavar="TEXT", help="Only rows whose last error contains TEXT (any case).")
@click.option("--page", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--per-page", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--cursor", help="Start at this next_cursor of an earlier page (instead of --page).")
@click.option("--as-of", help="List as of this ISO 8601 time (an earlier page's as_of), for a stable set.")
@click.option("--watch", is_flag=True, help="Redraw the table every --interval seconds until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True,
              help="Seconds between two redraws with --watch.")
@json_option
def list_(url, key, status, channel, alert_type, certificate_id, q, page, per_page, cursor, as_of, watch, interval,
          as_json) -> None:
    """List notifications, newest first; --status dead lists the dead letters.

    --watch redraws the table every --interval seconds (clearing the screen on a terminal) until
    Ctrl-C, which exits 0. --json prints the API's page: {"data": [...], "total", "total_exact",
    "page", "per_page", "as_of", "next_cursor"}.
    """
    if watch and as_json:
        raise click.UsageError("--watch redraws a table for people; scripts poll `list --json` instead")
    if cursor is not None and page != 1:
        raise click.UsageError("give --cursor or --page, not both")
    api = api_client(url, key)

    def fetch() -> dict:
        return call(api.get, "/api/v1/notifications", status=status, channel=channel, type=alert_type,
                    certificate_id=certificate_id, q=q, page=page if cursor is None else None, per_page=per_page,
                    cursor=cursor, as_of=as_of)

    body = fetch()
    if as_json:
        print_json(body)
    elif watch:
        _watch(fetch, body, interval)
    else:
        click.echo("\n".join(_notification_table(body)))


def _notification_table(body: dict) -> list[str]:
    now = datetime.now(UTC)
    retries = any(r["next_retry_at"] for r in body["data"])  # a column of its own only when a row has one
    columns = [Column("ID"), output.status_column(), Column("CHANNEL"), Column("TYPE", limit=18),
               Column("ATTEMPT"), Column("UPDATED"), *([Column("NEXT RETRY")] if retries else []),
               Column("LAST ERROR", flex=True)]
    rows = [[r["id"], r["status"], r["channel"], r["type"], output.attempt_label(r), relative(r["updated_at"], now),
             *([_next_retry(r, now)] if retries else []), r["last_error"] or ""] for r in body["data"]]
    lines = output.table(columns, rows) if rows else ["no notifications match"]
    total = f"{body['total']:,}" + ("" if body.get("total_exact", True) else "+")
    lines.append(f"page {body['page']}: {len(body['data'])} of {total}")
    if body.get("next_cursor"):
        lines.append(f"next page: --cursor {body['next_cursor']} --as-of {body['as_of']}")
    return lines


def _next_retry(row: dict, now: datetime) -> str:
    if not row["next_retry_at"]:
        return ""
    due = output.parse_time(row["next_retry_at"])
    return relative(due, now) if due > now else f"due {relative(due, now)}"


def _watch(fetch, body: dict, interval: float) -> None:
    """Redraw until Ctrl-C (exit 0). On a terminal the screen is cleared first; piped, tables follow
    each other. An error after the first fetch is shown in place and the next redraw tries again."""
    on_terminal = sys.stdout.isatty()
    try:
        while True:
            if on_terminal:
                click.clear()
            stamp = datetime.now(UTC).strftime("%H:%M:%S UTC")
            click.echo(f"every {interval:g} s, last at {stamp} (Ctrl-C to stop)\n")
            click.echo("\n".join(_notification_table(body) if isinstance(body, dict) else [body]))
            if not on_terminal:
                click.echo()
            time.sleep(interval)
            try:
                body = fetch()
            except CliError as exc:
                body = f"error: {exc.message} (trying again in {interval:g} s)"
    except KeyboardInterrupt:
        return


# --- show -----------------------------------------------------------------------------------------


@click.command()
@api_options
@click.argument("notification_id")
@json_option
def show(url, key, notification_id: str, as_json: bool) -> None:
    """One notification: its fields, then its attempts as a timeline."""
    body = call(api_client(url, key).get, api_path("notifications", notification_id))
    if as_json:
        print_json(body)
        return
    click.echo("\n".join(_notification_view(body)))


def _notification_view(n: dict) -> list[str]:
    now = datetime.now(UTC)

    def when(text: str | None) -> str:
        return f"{fmt_time(output.parse_time(text))} ({relative(text, now)})" if text else "—"

    fields = [("type", n["type"]), ("channel", n["channel"]), ("recipient", n["recipient"] or "—"),
              ("certificate", n["certificate_id"]), ("severity", n["severity"]), ("subject", n["subject"]),
              ("message", n["message"]), ("dedupe key", n["dedupe_key"]), ("created", when(n["created_at"])),
              ("updated", when(n["updated_at"])), ("sent", when(n["sent_at"])),
              ("next retry", when(n["next_retry_at"])), ("last error", n["last_error"])]
    lines = [f"{n['id']}  {styled(n['status'])}  {output.attempt_label(n)}", ""]
    for name, value in fields:
        text = "—" if value in (None, "") else str(value)
        lines.append(f"  {name:<12} " + text.replace("\n", "\n" + " " * 15))
    lines += ["", "Attempts"]
    attempts = n.get("attempts") or []
    if attempts:
        columns = [Column("#", right=True), Column("STARTED (UTC)"), Column("DURATION", right=True),
                   Column("OUTCOME", style=styled), Column("CODE", right=True), Column("WORKER", limit=24),
                   Column("ERROR", flex=True)]
        rows = [[a["attempt"], fmt_time(output.parse_time(a["started_at"]), zone=False),
                 fmt_seconds(a["duration_ms"] / 1000) if a["duration_ms"] is not None else "—",
                 a["outcome"] or "running", a["status_code"] if a["status_code"] is not None else "",
                 a["worker"] or "", a["error"] or ""] for a in attempts]
        lines += ["  " + line for line in output.table(columns, rows, width=output.terminal_width() - 2)]
    else:
        lines.append("  none yet")
    lines.append("  " + _what_next(n, now))
    return lines


def _what_next(n: dict, now: datetime) -> str:
    number = attempt_number(n["status"], n["retry_count"], n["sent_at"])
    status = n["status"]
    if status == Status.PENDING:
        return f"attempt {number} is queued or running"
    if status == Status.FAILED:
        due = output.parse_time(n["next_retry_at"])
        if due is None:
            return f"attempt {number + 1} is being scheduled"
        return f"attempt {number + 1} of {n['max_attempts']} " + (f"due {relative(due, now)}" if due > now
                                                                  else f"overdue since {relative(due, now)}")
    if status == Status.DEAD:
        return f"dead after {number} attempts: `certctl-notify requeue {n['id']}` sends it again"
    if n["sent_at"]:
        return f"delivered on attempt {number}, {relative(n['sent_at'], now)}" + (
            " (marked read)" if status == Status.READ else "")
    return "dismissed (marked read) without being delivered"


# --- stats ----------------------------------------------------------------------------------------


@click.command()
@api_options
@json_option
def stats(url, key, as_json: bool) -> None:
    """Counts per status (dead first), the oldest pending alert's age and the retries due."""
    body = call(api_client(url, key).get, "/api/v1/stats/summary")
    if as_json:
        print_json(body)
        return
    notes = {"failed": f"retries due now: {body.get('retries_due', 0):,}",
             "pending": f"oldest waiting {fmt_seconds(body.get('oldest_pending_seconds'))}"
             if body.get("notifications_pending") else ""}
    order = ["dead", "failed", "pending", "sent", "read"]
    order += [k.removeprefix("notifications_") for k in body
              if k.startswith("notifications_") and k.removeprefix("notifications_") not in [*order, "total"]]
    rows = [[name, f"{body.get(f'notifications_{name}', 0):,}", notes.get(name, "")] for name in order]
    rows.append(["total", f"{body.get('notifications_total', 0):,}", ""])
    click.echo("\n".join(output.table([output.status_column(), Column("COUNT", right=True), Column("")], rows,
                                      header=False)))


# --- requeue --------------------------------------------------------------------------------------


@click.command()
@api_options
@click.argument("ids", nargs=-1)
@click.option("--all-dead", is_flag=True, help="Requeue every dead row: a rate-limited bulk job, with progress.")
@click.option("--channel", type=choice_of(Channel), help="With --all-dead: only this channel.")
@click.option("--dry-run", is_flag=True, help="With --all-dead: only count.")
@json_option
def requeue(url, key, ids, all_dead, channel, dry_run, as_json) -> None:
    """Requeue dead or failed notifications by id, or --all-dead as a bulk job with progress.

    By id, the exit code is the worst outcome among the ids: 1 if any failed for another reason,
    else 3 if any does not exist, else 4 if any was in the wrong state (e.g. sent), else 0. With
    --json: {"results": [{"id", "status": requeued|not_found|conflict|error, "message"}]}.

    --all-dead shows a progress bar (on stderr) and ends with the job's final state (--json: the job
    as GET /api/v1/requeue-jobs/ID returns it); 4 when another bulk requeue is running. Ctrl-C asks
    whether to cancel the job on the server ([Y/n]; when stdin is not a terminal an answer already
    piped in, or arriving within 5 s, is read, and no answer or end of input counts as yes), then
    exits 130. Answering n leaves the job running and says how to follow it.
    """
    if all_dead == bool(ids):
        raise click.UsageError("give notification ids or --all-dead, not both")
    if (channel or dry_run) and not all_dead:
        raise click.UsageError("--channel and --dry-run go with --all-dead")
    if all_dead:
        _bulk_requeue(url, key, channel, dry_run, as_json)
        return
    _act_on_each(api_client(url, key), ids, "requeue", "requeued", as_json)


@click.command("mark-read")
@api_options
@click.argument("ids", nargs=-1, required=True)
@json_option
def mark_read(url, key, ids, as_json) -> None:
    """Mark sent notifications read (acknowledged) or dismiss dead ones, by id.

    Pending and failed rows are refused (their delivery is still running). The exit code is the worst
    outcome among the ids, as for requeue. With --json: {"results": [{"id", "status":
    marked_as_read|not_found|conflict|error, "message"}]}.
    """
    _act_on_each(api_client(url, key), ids, "read", "marked_as_read", as_json)


def _act_on_each(api, ids, action: str, done: str, as_json: bool) -> None:
    """POST /notifications/{id}/{action} for each id; print each outcome, exit with the worst."""
    results = _post_each(api, ids, action, done, as_json)
    if as_json:
        print_json({"results": results})
    code = worst_exit_code([r["status"] for r in results])
    if code:
        sys.exit(code)


def _post_each(api, ids, action: str, done: str, as_json: bool) -> list[dict]:
    from certctl_notify.errors import ApiClientError

    results = []
    for notification_id in ids:
        try:
            api.post(api_path("notifications", notification_id, action))
            result = {"id": notification_id, "status": done, "message": None}
        except ApiClientError as exc:
            outcome = {404: "not_found", 409: "conflict"}.get(exc.status, "error")
            result = {"id": notification_id, "status": outcome, "message": str(exc)}
        results.append(result)
        if as_json:
            continue
        if result["status"] == done:
            colour = "pending" if action == "requeue" else "read"  # what the row is now
            click.echo(f"{notification_id}: {styled(done.replace('_', ' '), colour)}")
        else:
            note(f"{notification_id}: {result['status'].replace('_', ' ')}: {result['message']}")
    return results


def worst_exit_code(statuses: list[str]) -> int:
    """0 when every id was acted on; else the worst: 1 (another error), then 3 (not found), then 4 (conflict)."""
    if "error" in statuses:
        return EXIT_FAILURE
    if "not_found" in statuses:
        return EXIT_NOT_FOUND
    if "conflict" in statuses:
        return EXIT_CONFLICT
    return 0


def _bulk_requeue(url: str, key: str | None, channel: str | None, dry_run: bool, as_json: bool) -> None:
    api = api_client(url, key)
    body = {"status": "dead", **({"channel": channel} if channel else {})}
    if dry_run:
        result = call(api.post, "/api/v1/notifications/requeue", {**body, "dry_run": True})
        if as_json:
            print_json(result)
        else:
            click.echo(f"{result['matched']:,} dead notifications would be requeued")
        return
    try:
        job = call(api.post, "/api/v1/notifications/requeue", body)
    except KeyboardInterrupt:
        raise CliError("interrupted while starting the bulk requeue: it may have started on the server",
                       EXIT_INTERRUPTED) from None
    job_id = job["job_id"]
    pace = f"at {job['rate_per_second']:g}/s" if job["rate_per_second"] else "unthrottled"
    note(f"bulk requeue {job_id}: {job['matched']:,} rows {pace} (Ctrl-C to cancel it)")
    try:
        state = _follow(api, job)
    except KeyboardInterrupt:
        _interrupted(url, key, job_id, as_json)
        return
    except CliError as exc:  # the API went away while following: the job does not depend on this command
        exc.message += f" (bulk requeue {job_id} goes on on the server)"
        raise
    if as_json:
        print_json(state)
    else:
        click.echo(f"{styled(state['status'])}: {state['requeued']:,} requeued, {state['skipped']:,} skipped "
                   "(changed meanwhile)")
    if state["status"] != "done":
        note(f"bulk requeue {job_id} was {state['status']} before it finished")
        sys.exit(EXIT_FAILURE)


def _follow(api, job: dict) -> dict:
    """Poll the job until it is no longer running, with a progress bar and ETA on stderr; its last state."""
    done = 0
    with click.progressbar(length=max(job["matched"], 1), label="requeueing", file=sys.stderr, show_eta=True,
                           show_pos=True) as bar:
        while True:
            state = call(api.get, api_path("requeue-jobs", job["job_id"]))
            progress = state["requeued"] + state["skipped"]
            bar.update(progress - done)
            done = progress
            if state["status"] != "running":
                return state
            time.sleep(POLL_SECONDS)


def _interrupted(url: str, key: str | None, job_id: str, as_json: bool) -> None:
    """After Ctrl-C: cancel the job on the server unless the operator says n; exit 130 either way."""
    from certctl_notify.errors import ApiClientError

    api = api_client(url, key)  # a new connection: the interrupted one may have stopped mid-request
    try:
        if _confirm_cancel(job_id):
            try:
                api.post(api_path("requeue-jobs", job_id, "cancel"))
            except ApiClientError as exc:
                if exc.status != 409:  # 409: it finished meanwhile; its state says how
                    raise CliError(f"could not cancel {job_id} ({exc}): it may still be running",
                                   EXIT_INTERRUPTED) from None
            state = call(api.get, api_path("requeue-jobs", job_id))
            if as_json:
                print_json(state)
            elif state["status"] == "cancelled":
                click.echo(f"{styled('cancelled')} {job_id}: {state['requeued']:,} of {state['matched']:,} requeued "
                           f"before the cancel, {state['skipped']:,} skipped; the rest are still dead")
            else:
                click.echo(f"{job_id} had already finished ({styled(state['status'])}): {state['requeued']:,} "
                           f"requeued, {state['skipped']:,} skipped")
        else:
            state = call(api.get, api_path("requeue-jobs", job_id))
            if as_json:
                print_json(state)
            base = url.rstrip("/")
            note(f"left {job_id} running on the server ({state['requeued']:,} of {state['matched']:,} requeued "
                 f"so far). Follow it:\n  curl -H \"Authorization: Bearer $CERTCTL_API_KEY\" "
                 f"{base}/api/v1/requeue-jobs/{job_id}\ncancel it:\n  curl -X POST -H \"Authorization: Bearer "
                 f"$CERTCTL_API_KEY\" {base}/api/v1/requeue-jobs/{job_id}/cancel")
    except KeyboardInterrupt:
        note(f"\ninterrupted again: {job_id} may still be running on the server")
    sys.exit(EXIT_INTERRUPTED)


def _confirm_cancel(job_id: str) -> bool:
    note(f"\nCancel bulk requeue {job_id} on the server? [Y/n] ", nl=False)
    try:
        answer = _read_answer()
    except KeyboardInterrupt:  # Ctrl-C again at the prompt: take the default
        answer = None
    if answer is None:
        note("\n(no answer: cancelling)")
        return True
    return not answer.strip().lower().startswith("n")


def _read_answer() -> str | None:
    """A line from stdin; None at end of input, or when stdin is not a terminal and no line comes within
    `PIPED_ANSWER_SECONDS`."""
    stdin = sys.stdin
    try:
        if stdin is None or stdin.closed:
            return None
        if not stdin.isatty():
            ready, _, _ = select.select([stdin], [], [], PIPED_ANSWER_SECONDS)
            if not ready:
                return None
        line = stdin.readline()
    except (OSError, ValueError):
        return None
    return line or None


# --- enqueue, workers -----------------------------------------------------------------------------


@click.command()
@api_options
@click.option("--type", "alert_type", required=True, type=choice_of(AlertType))
@click.option("--channel", "channels", multiple=True, required=True, type=choice_of(Channel),
              help="A channel (repeat for several: one row each).")
@click.option("--message", required=True)
@click.option("--recipient")
@click.option("--subject")
@click.option("--severity", type=choice_of(Severity))
@click.option("--certificate-id")
@click.option("--dedupe-key")
@json_option
def enqueue(url, key, alert_type, channels, message, recipient, subject, severity, certificate_id,
            dedupe_key, as_json) -> None:
    """Enqueue one alert (one row per channel) through the API and print the rows."""
    fields = {"type": alert_type, "channels": list(channels), "message": message, "recipient": recipient,
              "subject": subject, "severity": severity, "certificate_id": certificate_id, "dedupe_key": dedupe_key}
    body = call(api_client(url, key).post, "/api/v1/notifications", {k: v for k, v in fields.items() if v is not None})
    if as_json:
        print_json(body)
        return
    rows = [[row["id"], row["channel"], "created" if created else "existing (same dedupe key)", row["status"]]
            for row, created in zip(body["data"], body["created"], strict=True)]
    click.echo("\n".join(output.table([Column("ID"), Column("CHANNEL"), Column(""), output.status_column()], rows,
                                      header=False)))


@click.command()
@api_options
@json_option
def workers(url, key, as_json: bool) -> None:
    """Workers, their active/reserved/scheduled tasks and the queue depths (exit 1 when unavailable)."""
    view = call(api_client(url, key).get, "/api/v1/workers")
    if as_json:
        print_json(view)
    else:
        click.echo("\n".join(_workers_table(view)))
    if view["status"] != "ok":
        sys.exit(EXIT_FAILURE)


def _workers_table(view: dict) -> list[str]:
    def shown(value) -> str:
        return "?" if value is None else str(value)

    if not view["workers"]:
        lines = [f"workers unavailable: {view['reason']}"]
    else:
        columns = [Column("WORKER"), Column("POOL"), Column("PROCESSED", right=True), Column("ACTIVE", right=True),
                   Column("RESERVED", right=True), Column("SCHEDULED", right=True)]
        rows = [[w["name"], f"{shown(w['pool']['kind'])}/{shown(w['pool']['size'])}", w["processed"],
                 shown(None if w["active"] is None else len(w["active"])), shown(w["reserved"]), shown(w["scheduled"])]
                for w in view["workers"]]
        lines = output.table(columns, rows)
        for w in view["workers"]:
            for task in w["active"] or ():
                what = (f"{task['notification_id']} attempt {task['attempt']}" if task["notification_id"]
                        else shown(task["task"]))
                runtime = fmt_seconds(task["runtime_seconds"]) if task["runtime_seconds"] is not None else "?"
                lines.append(f"  {w['name']}: running {what} for {runtime} (pid {shown(task['worker_pid'])})")
    if view["queues"] is not None:
        lines.append("queues: " + ", ".join(f"{name} {n}" for name, n in view["queues"].items()))
    return lines
