"""The command line for scripts and for people, against a real API server, worker, PostgreSQL and Redis:
``--json`` prints what the API returns for the same request, exit codes say what went wrong, the
readable forms count attempts as the console does, ``list --watch`` and a bulk requeue stop on Ctrl-C
in a real process (the bulk job cancelled on the server), ``purge`` stops after a batch, and the shell
completes commands and option values through click's own mechanism."""

from __future__ import annotations

import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from click.testing import CliRunner
from sqlalchemy import func, select, text

from certctl_notify import retention, store
from certctl_notify.environment import load_settings
from certctl_notify.model import attempts, events
from certctl_notify.settings import RetentionSettings
from cli import main
from tests.conftest import wait_for
from tests.support.api_server import threaded_api
from tests.support.rows import insert_dead_in_bulk

COMMAND = str(Path(sys.executable).parent / "certctl-notify")
READ = {"Authorization": "Bearer read-key"}
ADMIN = {"Authorization": "Bearer admin-key"}


def cli(api_url, command, *args, key="read-key", color=False):
    return CliRunner().invoke(main, [command, "--url", api_url, "--key", key, *args], color=color)


def add(sessions, nid, status, *, ago=timedelta(minutes=3), tried=0, **values):
    """A row last changed ``ago``, with ``tried`` finished attempts (the last one's outcome is its status's)."""
    moment = datetime.now(UTC) - ago
    with sessions.begin() as s:
        store.insert_notification(s, {"id": nid, "type": "RenewalFailure", "channel": "Webhook", "recipient": "",
                                      "message": "m", "status": status, "retry_count": tried, "created_at": moment,
                                      "updated_at": moment, **values})
        for n in range(1, tried + 1):
            last = n == tried
            s.execute(attempts.insert().values(
                notification_id=nid, attempt=n, started_at=moment - timedelta(seconds=10 * (tried - n)),
                finished_at=moment, outcome="dead" if last and status == "dead" else "retry", error_class="transient",
                error=f"HTTP 503 from https://hooks.example/{n}", status_code=503, duration_ms=120, worker="w1"))


def same_as_the_api(result, api_url, path, params=None):
    assert result.exit_code == 0, result.output
    expected = httpx.get(api_url + path, params=params, headers=READ).json()
    assert json.loads(result.stdout) == expected
    return expected


# --- --json ---------------------------------------------------------------------------------------


def test_json_is_the_apis_own_json_and_nothing_else_on_stdout(api_url, sessions):
    later = datetime.now(UTC) + timedelta(hours=1)
    add(sessions, "n-dead", "dead", tried=5, last_error="HTTP 503 from https://hooks.example/5",
        certificate_id="mc-api")
    add(sessions, "n-failed", "failed", tried=2, next_retry_at=later, last_error="timed out")
    add(sessions, "n-sent", "sent", sent_at=datetime.now(UTC))
    as_of = datetime.now(UTC).isoformat()
    for args, params in [
        (["--status", "dead"], {"status": "dead"}),
        (["--channel", "webhook", "--per-page", "2"], {"channel": "Webhook", "per_page": 2}),  # any case
        (["--q", "503", "--certificate-id", "mc-api"], {"q": "503", "certificate_id": "mc-api"}),
        (["--type", "RenewalFailure"], {"type": "RenewalFailure"}),
    ]:
        listed = same_as_the_api(cli(api_url, "list", *args, "--as-of", as_of, "--json"), api_url,
                                 "/api/v1/notifications", {**params, "as_of": as_of})
        assert listed["data"], args
    first = json.loads(cli(api_url, "list", "--per-page", "1", "--as-of", as_of, "--json").stdout)
    same_as_the_api(cli(api_url, "list", "--per-page", "1", "--cursor", first["next_cursor"], "--as-of", as_of,
                        "--json"), api_url, "/api/v1/notifications",
                    {"per_page": 1, "cursor": first["next_cursor"], "as_of": as_of})
    shown = same_as_the_api(cli(api_url, "show", "n-dead", "--json"), api_url, "/api/v1/notifications/n-dead")
    assert len(shown["attempts"]) == 5
    same_as_the_api(cli(api_url, "stats", "--json"), api_url, "/api/v1/stats/summary")
    # no worker runs: the view says unavailable (exit 1) and is still the API's (but for when it was checked)
    workers = cli(api_url, "workers", "--json")
    view = httpx.get(f"{api_url}/api/v1/workers", headers=READ).json()
    assert workers.exit_code == 1 and view["status"] == "unavailable"
    assert {**json.loads(workers.stdout), "checked_at": view["checked_at"]} == view
    # enqueue prints the API's answer; its rows are what GET returns for them
    created = cli(api_url, "enqueue", "--type", "ExpirationWarning", "--channel", "Webhook", "--channel", "Slack",
                  "--message", "expires soon", "--dedupe-key", "k-1", "--json", key="admin-key")
    assert created.exit_code == 0, created.output
    body = json.loads(created.stdout)
    assert body["created"] == [True, True] and {r["channel"] for r in body["data"]} == {"Webhook", "Slack"}
    for row in body["data"]:
        assert {**row, "attempts": []} == httpx.get(f"{api_url}/api/v1/notifications/{row['id']}", headers=READ).json()
    # the bulk requeue's dry run is the API's
    dry = cli(api_url, "requeue", "--all-dead", "--dry-run", "--json", key="admin-key")
    assert dry.exit_code == 0 and json.loads(dry.stdout) == httpx.post(
        f"{api_url}/api/v1/notifications/requeue", json={"status": "dead", "dry_run": True}, headers=ADMIN).json()
    # requeue by id: one result per id, the exit code the worst of them (3: one does not exist)
    requeued = cli(api_url, "requeue", "n-dead", "n-sent", "n-nope", "--json", key="admin-key")
    assert requeued.exit_code == 3
    results = json.loads(requeued.stdout)["results"]
    assert [(r["id"], r["status"]) for r in results] == [("n-dead", "requeued"), ("n-sent", "conflict"),
                                                          ("n-nope", "not_found")]
    assert results[0]["message"] is None and "does not exist" in results[2]["message"]
    assert httpx.get(f"{api_url}/api/v1/notifications/n-dead", headers=READ).json()["status"] == "pending"


# --- exit codes -----------------------------------------------------------------------------------


def test_exit_codes_say_what_went_wrong_and_errors_go_to_stderr(api_url, sessions):
    add(sessions, "n-sent", "sent", sent_at=datetime.now(UTC))
    add(sessions, "n-dead", "dead", tried=5)
    cases = [
        (cli(api_url, "show", "n-nope", "--json"), 3, "notification n-nope does not exist"),
        (cli(api_url, "requeue", "n-nope", "--json", key="admin-key"), 3, None),
        (cli(api_url, "requeue", "n-sent", key="admin-key"), 4, "n-sent: conflict: "),
        (cli(api_url, "requeue", "n-sent", "n-dead", key="read-key"), 1, "admin key"),  # refused for each id
        (cli(api_url, "list", "--status", "lost"), 2, "'lost' is not one of"),
        (cli(api_url, "requeue"), 2, "give notification ids or --all-dead"),
        (CliRunner().invoke(main, ["stats", "--url", "http://127.0.0.1:1", "--json"]), 1, "cannot reach the API"),
    ]
    for result, code, message in cases:
        assert result.exit_code == code, (result.exit_code, code, result.output)
        if message:
            assert message in result.stderr, result.stderr
        if code != 3 or message:  # only a result document may be on stdout
            assert result.stdout == "", result.stdout
    assert json.loads(cases[1][0].stdout)["results"][0]["status"] == "not_found"
    # a conflicted requeue by id among requeued ones exits 4
    add(sessions, "n-dead-2", "dead", tried=5)
    mixed = cli(api_url, "requeue", "n-dead-2", "n-sent", key="admin-key")
    assert mixed.exit_code == 4 and "n-dead-2: requeued" in mixed.stdout


# --- readable -------------------------------------------------------------------------------------


def test_readable_output_counts_attempts_like_the_console_and_says_when(api_url, sessions, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")  # the width a table fits (a real pipe falls back to 120 as well)
    add(sessions, "n-dead", "dead", tried=5, last_error="HTTP 503 from https://hooks.example/5 " + "x" * 300)
    add(sessions, "n-failed", "failed", ago=timedelta(seconds=30), tried=2,
        next_retry_at=datetime.now(UTC) + timedelta(minutes=2, seconds=30), last_error="timed out")
    add(sessions, "n-pending", "pending", ago=timedelta(hours=2))
    listed = cli(api_url, "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "CHANNEL", "TYPE", "ATTEMPT", "UPDATED", "NEXT", "RETRY", "LAST",
                                "ERROR"]
    dead = next(line for line in lines if line.startswith("n-dead"))
    assert "Attempt 5/5" in dead and "3 min ago" in dead and dead.endswith("…") and len(dead) <= 120
    failed = next(line for line in lines if line.startswith("n-failed"))
    assert "Attempt 2/5" in failed and "in 2 min" in failed
    assert "Attempt 1/5" in next(line for line in lines if line.startswith("n-pending"))
    assert lines[-1] == "page 1: 3 of 3"
    # the columns line up: every row's status starts where the header's does
    starts = {line.index(line.split()[1], len(line.split()[0])) for line in lines[:4]}
    assert len(starts) == 1
    # show: the fields, then the attempts as a timeline, then what comes next
    shown = cli(api_url, "show", "n-dead").stdout
    assert shown.splitlines()[0] == "n-dead  dead  Attempt 5/5"
    assert re.search(r"updated\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(3 min( \d+ s)? ago\)", shown)
    timeline = shown[shown.index("Attempts"):].splitlines()
    assert timeline[1].split()[:6] == ["#", "STARTED", "(UTC)", "DURATION", "OUTCOME", "CODE"]
    assert [line.split()[0] for line in timeline[2:7]] == ["1", "2", "3", "4", "5"]
    assert "120 ms" in timeline[2] and "retry" in timeline[2] and "503" in timeline[2] and "dead" in timeline[6]
    assert "dead after 5 attempts" in timeline[-1]
    assert "attempt 3 of 5 due in 2 min" in cli(api_url, "show", "n-failed").stdout
    # stats: dead first, with what the API adds
    stats = cli(api_url, "stats").stdout.splitlines()
    assert [line.split()[:2] for line in stats] == [["dead", "1"], ["failed", "1"], ["pending", "1"], ["sent", "0"],
                                                    ["read", "0"], ["total", "3"]]
    assert "oldest waiting 2 h" in stats[2]
    # colours only on a terminal (click strips them otherwise): dead red, failed yellow, pending cyan
    assert "\x1b[" not in listed.output
    coloured = cli(api_url, "list", color=True).stdout
    assert "\x1b[31m\x1b[1mdead" in coloured and "\x1b[33mfailed" in coloured and "\x1b[36mpending" in coloured


# --- list --watch ---------------------------------------------------------------------------------


def test_list_watch_redraws_until_ctrl_c_then_exits_0(api_url, sessions):
    add(sessions, "n-dead", "dead", tried=5)
    proc = subprocess.Popen([COMMAND, "list", "--watch", "--interval", "0.2", "--url", api_url, "--key", "read-key"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        wait_for(lambda: sum(line.startswith("page 1:") for line in lines) >= 1, timeout=15, message="a table")
        add(sessions, "n-new", "pending")  # the next redraw shows it
        wait_for(lambda: any(line.startswith("n-new") for line in lines), timeout=10, message="a redraw")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    reader.join(5)
    assert sum(line.startswith("page 1:") for line in lines) >= 2
    assert sum(line.startswith("ID ") for line in lines) >= 2
    assert proc.stderr.read() == ""  # quietly: no "Aborted!", no traceback


# --- bulk requeue and Ctrl-C ----------------------------------------------------------------------


def test_ctrl_c_during_a_bulk_requeue_cancels_the_job_on_the_server(make_env, start_worker, sessions, receiver):
    # Given 100 dead rows, an API that requeues 5 rows a second, and a worker that runs its job
    insert_dead_in_bulk(sessions, 100, channel="Webhook")
    settings = load_settings(make_env(CERTCTL_REQUEUE_RATE="5"))
    start_worker(make_env())
    with threaded_api(settings) as api_url:
        # When `requeue --all-dead` is interrupted mid-job and the operator answers y
        proc, job = _bulk_requeue_until_under_way(api_url, sessions)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate("y\n", timeout=20)
        # Then it asked, cancelled the job on the server, said what was requeued before, and exited 130
        assert proc.returncode == 130, stderr
        assert f"Cancel bulk requeue {job.id} on the server? [Y/n]" in stderr
        state = httpx.get(f"{api_url}/api/v1/requeue-jobs/{job.id}", headers=READ).json()
        assert state["status"] == "cancelled" and 0 < state["requeued"] < state["matched"] == 100
        assert f"cancelled {job.id}: {state['requeued']} of 100 requeued before the cancel" in stdout
        time.sleep(0.5)  # no chunk goes on after the cancel
        assert httpx.get(f"{api_url}/api/v1/requeue-jobs/{job.id}", headers=READ).json()["requeued"] == \
            state["requeued"]

        # When the next one is interrupted and the operator answers n (with --json)
        proc, job = _bulk_requeue_until_under_way(api_url, sessions, "--json")
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate("n\n", timeout=20)
        # Then the job goes on, the command says how to follow it, prints the job as it was, and exits 130
        assert proc.returncode == 130, stderr
        assert json.loads(stdout)["id"] == job.id and f"left {job.id} running on the server" in stderr
        assert f"{api_url}/api/v1/requeue-jobs/{job.id}" in stderr
        assert httpx.get(f"{api_url}/api/v1/requeue-jobs/{job.id}", headers=READ).json()["status"] == "running"
        # And another bulk requeue meanwhile is a conflict (exit 4), with its reason on stderr
        second = CliRunner().invoke(main, ["requeue", "--all-dead", "--url", api_url, "--key", "admin-key", "--json"])
        assert second.exit_code == 4 and "is still running" in second.stderr and second.stdout == ""
        assert httpx.post(f"{api_url}/api/v1/requeue-jobs/{job.id}/cancel", headers=ADMIN).status_code == 200


def _bulk_requeue_until_under_way(api_url, sessions, *args):
    proc = subprocess.Popen([COMMAND, "requeue", "--all-dead", "--url", api_url, "--key", "admin-key", *args],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def under_way():
        with sessions.begin() as s:
            job = store.running_job(s)
        return job if job is not None and job.requeued >= 2 else None

    try:
        return proc, wait_for(under_way, timeout=20, message="the bulk requeue to be under way")
    except BaseException:
        proc.kill()
        raise


# --- purge ----------------------------------------------------------------------------------------


def _add_sent(sessions, count: int, *, days: int = 40) -> None:
    with sessions.begin() as s:
        s.execute(text("""
            INSERT INTO notification_events (id, type, channel, recipient, message, status, retry_count,
                                             created_at, updated_at, sent_at)
            SELECT 'old_' || lpad(g::text, 6, '0'), 'ExpirationWarning', 'Webhook', '', 'm', 'sent', 0,
                   now() - make_interval(days => :days), now() - make_interval(days => :days, secs => g), now()
            FROM generate_series(1, :n) g"""), {"n": count, "days": days})


def _count(sessions) -> int:
    with sessions.begin() as s:
        return s.execute(select(func.count()).select_from(events)).scalar_one()


def test_the_purge_stop_hook_ends_the_run_after_a_committed_batch(sessions):
    # Given 50 sent rows past their age, batches of 10, and a stop asked for once 30 rows are deleted
    _add_sent(sessions, 50)
    batches: list[tuple[str, int]] = []
    report = retention.purge(sessions, RetentionSettings(batch_size=10), on_batch=lambda *b: batches.append(b),
                             stop=lambda: sum(n for _, n in batches) >= 30)
    # Then each batch was reported as it committed (read and dead have none due), the run ended before
    # the next batch, and the rest is still there
    assert batches == [("sent", 10), ("read", 0), ("dead", 0), ("sent", 10), ("sent", 10)]
    assert (report.total, report.batches, report.stopped, report.finished) == (30, 5, True, False)
    assert _count(sessions) == 20
    # And a run without a stop deletes the rest, reporting each batch
    batches.clear()
    report = retention.purge(sessions, RetentionSettings(batch_size=10), on_batch=lambda *b: batches.append(b))
    assert report.total == 20 and not report.stopped and report.finished and _count(sessions) == 0
    assert batches == [("sent", 10), ("read", 0), ("dead", 0), ("sent", 10), ("sent", 0)]


def test_purge_shows_progress_and_ctrl_c_stops_it_after_a_batch(make_env, sessions):
    # Given 20,000 sent rows past their age, deleted 10 a batch
    _add_sent(sessions, 20_000)
    env = {**os.environ, **make_env(CERTCTL_RETENTION_BATCH="10")}
    # When `purge --json` runs with its progress bar on a terminal, and gets Ctrl-C once it is under way
    terminal, progress_tty = pty.openpty()
    proc = subprocess.Popen([COMMAND, "purge", "--json"], env=env, stdout=subprocess.PIPE, stderr=progress_tty,
                            text=True)
    os.close(progress_tty)
    shown = bytearray()

    def read_terminal():
        while chunk := _read(terminal):
            shown.extend(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        # click estimates the ETA after the bar's first second
        wait_for(lambda: re.search(rb"/20000  \d\d:\d\d:\d\d", shown), timeout=20, message="a progress bar with ETA")
        proc.send_signal(signal.SIGINT)
        stdout, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
        reader.join(5)
        os.close(terminal)
    # Then it stopped after a whole batch (exit 130), the rows it reports are gone, the rest still there
    assert proc.returncode == 130
    report = json.loads(stdout)
    left = _count(sessions)
    assert report["stopped"] is True and report["purged"]["sent"] == 20_000 - left and 0 < left < 20_000
    assert report["purged"]["sent"] % 10 == 0
    # And the terminal saw a progress bar with the count and an ETA, then why it stopped
    screen = shown.decode(errors="replace")
    assert "purging  [" in screen
    assert "stopped on Ctrl-C after a whole batch" in screen


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO: the other end closed
        return b""


# --- completion and start-up ----------------------------------------------------------------------


def test_completion_scripts_and_completions_come_from_click():
    for shell, marker in [("bash", "complete -o nosort -F"), ("zsh", "#compdef certctl-notify"),
                          ("fish", "complete --no-files --command certctl-notify")]:
        script = CliRunner().invoke(main, ["completion", shell])
        assert script.exit_code == 0 and marker in script.stdout and "_CERTCTL_NOTIFY_COMPLETE" in script.stdout

    def complete(words: str) -> list[str]:
        env = {**os.environ, "_CERTCTL_NOTIFY_COMPLETE": "bash_complete", "COMP_WORDS": words,
               "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))}
        result = subprocess.run([COMMAND], env=env, capture_output=True, text=True, timeout=30)
        assert result.returncode == 0, result.stderr
        return [line.split(",", 1)[1] for line in result.stdout.splitlines()]

    assert complete("certctl-notify li") == ["list"]
    assert complete("certctl-notify list --status ") == ["pending", "sent", "failed", "dead", "read"]
    assert complete("certctl-notify requeue --all-dead --channel Web") == ["Webhook"]
    assert "RenewalFailure" in complete("certctl-notify list --type Ren")


def test_the_command_line_loads_no_heavy_library_to_start():
    probe = "import sys, cli; print(sorted(m for m in ('sqlalchemy', 'celery', 'flask', 'httpx') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stderr
