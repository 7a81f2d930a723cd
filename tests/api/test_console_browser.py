"""The operator console in Debian's chromium: the API under a real gunicorn, a real Celery worker, PostgreSQL,
Redis and the test receiver. Each test signs in through the console's form and checks what an operator sees."""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from certctl_notify.model import attempts, events
from tests.conftest import wait_for
from tests.support.api_server import GunicornProcess
from tests.support.browser import axe_violations, dialogs, enabled_controls, save_screenshot, tab_order
from tests.support.console_page import rows, sign_in, tab_count
from tests.support.receiver import Answer
from tests.support.rows import row_of, settled

ADMIN = {"Authorization": "Bearer admin-key"}
#: Bulk requeue pace (rows/s): 500 rows take 12.5 s, so a cancel lands part way.
REQUEUE_RATE = 40
#: A refresh the page's script makes on its own comes within this (the auto-refresh period is 5 s).
REFRESH_WAIT_MS = 8_000


@dataclass
class Console:
    url: str
    http: httpx.Client  #: the API with the admin key, as a script would call it


@pytest.fixture
def console(make_env, start_worker, tmp_path, request) -> Iterator[Console]:
    """The API under gunicorn and a worker, both on this test's environment; the API log is printed on failure."""
    env = make_env(CERTCTL_REQUEUE_RATE=str(REQUEUE_RATE))
    worker = start_worker(env, wait=False)  # it starts while gunicorn does
    api = GunicornProcess(env, tmp_path / "api.log")
    try:
        api.start()
        worker.wait_ready(worker.is_ready, 30)
        with httpx.Client(base_url=api.url, headers=ADMIN, timeout=10) as http:
            yield Console(api.url, http)
    finally:
        api.stop()
        if getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed:
            print(f"--- api.log ---\n{api.log()[-6000:]}")


def notification(seq: int, status: str, **values) -> dict:
    """A row as the store holds it; ``seq`` orders ids and creation times (an hour ago + seq seconds)."""
    at = datetime.now(UTC) - timedelta(hours=1) + timedelta(seconds=seq)
    dead_or_failed = status in ("dead", "failed")
    return {"id": f"notif_{seq:05d}_{uuid.uuid4().hex[:8]}", "type": "ExpirationWarning", "channel": "Webhook",
            "recipient": "", "subject": None, "message": f"certificate c-{seq} expires in 7 days",
            "certificate_id": f"c-{seq}", "status": status, "retry_count": {"dead": 5, "failed": 2}.get(status, 0),
            "last_error": "HTTP 503 from the webhook receiver" if dead_or_failed else None,
            "next_retry_at": at + timedelta(days=1) if status == "failed" else None,
            "sent_at": at if status in ("sent", "read") else None, "created_at": at, "updated_at": at,
            "dispatched_at": at, **values}


def insert(sessions, *rows_: dict) -> list[str]:
    """Insert rows straight into the table (no task is published for them); returns their ids."""
    with sessions.begin() as s:
        s.execute(events.insert(), list(rows_))
    return [r["id"] for r in rows_]


def statuses(sessions) -> dict[str, str]:
    with sessions.begin() as s:
        return dict(s.execute(select(events.c.id, events.c.status)).all())


def mark_live_region(page: Page) -> None:
    """Tag the live region's current content, so `wait_for_refresh` can tell when the script replaced it."""
    page.evaluate("() => { document.querySelector('#live > *').dataset.stale = 'yes'; }")


def wait_for_refresh(page: Page, timeout: float = REFRESH_WAIT_MS) -> None:
    page.wait_for_function("() => !document.querySelector('#live [data-stale]')", timeout=timeout)


def test_dead_letters_show_attempts_and_error_and_a_requeued_row_turns_sent_without_reload(
    sessions, receiver, console, page
):
    # Given three alerts to a receiver that answers 503 every time (with a body too long for the list to
    # show in full), enqueued as a producer would
    certificates = ["demo-api", "demo-www", "demo-mail"]
    outage = b"gateway in maintenance until 19:00 UTC; alerts are not accepted meanwhile, retry later"
    ids = {}
    for certificate in certificates:
        receiver.script(certificate, [Answer(503, body=outage)])
        response = console.http.post("/api/v1/notifications", json={
            "type": "ExpirationWarning", "channel": "Webhook", "certificate_id": certificate,
            "message": f"certificate {certificate} expires in 7 days"})
        assert response.status_code == 202, response.text
        ids[certificate] = response.json()["data"][0]["id"]
    for notification_id in ids.values():
        wait_for(settled(sessions, notification_id, "dead"), timeout=30, message=f"{notification_id} to go dead")

    # When the operator opens the Dead letter tab
    sign_in(page, console.url, "admin-key", "/console/notifications?tab=dead")
    # Then every alert is there as a dead letter after five attempts, with its last error in full on hover
    shown = {r["id"]: r for r in rows(page)}
    assert set(shown) == set(ids.values())
    assert {(r["badge"], r["attempt"]) for r in shown.values()} == {("dead letter", "Attempt 5/5")}
    assert tab_count(page, "dead") == 3
    for notification_id in ids.values():
        last_error = row_of(sessions, notification_id).last_error
        assert last_error.startswith("HTTP 503 from http://127.0.0.1:") and last_error.endswith(outage.decode())
        error = page.locator(f'tr[data-id="{notification_id}"] span.last-error')
        expect(error).to_have_attribute("title", last_error)
        shown_text = error.inner_text()
        assert shown_text.endswith("…") and last_error.startswith(shown_text[:-1]), shown_text

    # When the receiver recovers and the operator clicks Requeue on one row
    receiver.script("demo-api", [200])
    target = ids["demo-api"]
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    page.evaluate("() => { window.__sameDocument = true; }")
    page.locator(f'button[data-action="requeue"][data-id="{target}"]').click()
    # Then the row says so, and the live refresh shows it sent, kept in view though it left the tab
    expect(page.locator(f'[data-result-for="{target}"]')).to_have_text("Requeued")
    row = page.locator(f'#live tr[data-id="{target}"]')
    expect(row).to_have_attribute("data-status", "sent", timeout=15_000)
    expect(row.locator(".badge")).to_have_text("sent")
    expect(row).to_have_class("outside")
    expect(row).to_contain_text("no longer in this view")
    expect(page.locator('nav.tabs a[data-tab="dead"] .count')).to_have_text("2")
    save_screenshot(page, "console-requeued")
    # And all that without the page being loaded again
    assert page.evaluate("() => window.__sameDocument === true")
    assert navigations == []
    assert row_of(sessions, target).status == "sent"
    assert [r["status"] for r in rows(page) if r["id"] != target] == ["dead", "dead"]


def test_bulk_requeue_asks_first_shows_progress_and_cancels_part_way_in_id_order(sessions, console, page):
    ids = insert(sessions, *(notification(i, "dead") for i in range(500)))
    sign_in(page, console.url, "admin-key", "/console/notifications?tab=dead")
    assert tab_count(page, "dead") == 500

    # When the operator opens the bulk requeue: a dry run counts the rows first
    page.click("#bulk-open")
    expect(page.locator("#bulk-dialog")).to_be_visible()
    expect(page.locator("#bulk-question")).to_have_text("Requeue 500 dead notifications?")
    # And confirms: the progress bar moves
    page.click("#bulk-confirm")
    progress = page.locator("#bulk-progress")
    expect(progress).to_be_visible()
    page.wait_for_function("() => document.getElementById('bulk-progress').value > 0")
    first = progress.evaluate("p => p.value")
    page.wait_for_function("v => document.getElementById('bulk-progress').value > v", arg=first)
    status = page.locator("#bulk-status")
    expect(status).to_have_text(re.compile(r"^Running: [\d,]+ of 500 requeued\.$"))
    # When the operator cancels part way
    page.click("#bulk-cancel")
    # Then the dialog says how many were requeued
    expect(status).to_have_attribute("data-job-status", "cancelled")
    requeued = int(status.get_attribute("data-requeued"))
    assert 0 < requeued < 500, requeued
    expect(status).to_have_text(f"Cancelled: {requeued:,} of 500 requeued.")
    save_screenshot(page, "console-bulk-cancelled")
    # And exactly that many rows left the dead letters: the first ones in id order, as the job goes
    not_dead = sorted(i for i, s in statuses(sessions).items() if s != "dead")
    assert not_dead == sorted(ids)[:requeued]
    # And closing the dialog refreshes the view to the new count
    page.click("#bulk-close")
    expect(page.locator("#bulk-dialog")).to_be_hidden()
    expect(page.locator('nav.tabs a[data-tab="dead"] .count')).to_have_text(f"{500 - requeued:,}")


def open_tab(page: Page, tab: str) -> list[dict]:
    """Click a tab and read its rows on the first paint, before any refresh could correct them."""
    with page.expect_navigation(wait_until="domcontentloaded"):
        page.click(f'nav.tabs a[data-tab="{tab}"]')
    return rows(page)


def test_each_tab_and_filter_shows_only_its_rows_on_first_paint(sessions, console, page):
    mix = [("dead", "Webhook"), ("dead", "Slack"), ("dead", "Webhook"), ("sent", "Webhook"), ("sent", "Email"),
           ("sent", "Slack"), ("pending", "Slack"), ("failed", "Webhook"), ("read", "Email")]
    ids = insert(sessions, *(notification(i, status, channel=channel) for i, (status, channel) in enumerate(mix)))
    expected = dict(zip(ids, mix, strict=True))
    sign_in(page, console.url, "admin-key", "/console/notifications")
    assert len(rows(page)) == 9
    # Given the All tab has refreshed itself at least once
    mark_live_region(page)
    wait_for_refresh(page)

    # When the operator clicks Dead letter, then Sent
    for tab in ("dead", "sent"):
        shown = open_tab(page, tab)
        # Then the first paint shows only that tab's rows, as many as its count says
        assert page.locator(f'nav.tabs a[data-tab="{tab}"]').get_attribute("aria-current") == "page"
        assert {r["id"] for r in shown} == {i for i, (status, _) in expected.items() if status == tab}
        assert {r["status"] for r in shown} == {tab}
        assert len(shown) == tab_count(page, tab) == 3

    # When the operator filters the All tab by channel
    open_tab(page, "all")
    page.select_option('select[name="channel"]', "Slack")
    with page.expect_navigation(wait_until="domcontentloaded"):
        page.get_by_role("button", name="Apply").click()
    # Then only that channel's rows show, at once
    shown = rows(page)
    assert {r["id"] for r in shown} == {i for i, (_, channel) in expected.items() if channel == "Slack"}
    assert {r["channel"] for r in shown} == {"Slack"}
    assert len(shown) == tab_count(page, "all") == 3


@contextmanager
def other_origin(pages: dict[str, str]) -> Iterator[str]:
    """Serve ``pages`` (path → HTML) from another port of 127.0.0.1: another origin, as a page of another site."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = pages.get(self.path, "not found").encode()
            self.send_response(200 if self.path in pages else 404)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_read_key_sees_no_actions_and_forged_requests_change_nothing(sessions, console, page):
    dead, sent = insert(sessions, notification(0, "dead"), notification(1, "sent"))

    # Given an operator signed in with the read key
    sign_in(page, console.url, "read-key", "/console/")
    # Then no view offers an action, the bulk requeue or the audit log
    for path in ("/console/", "/console/notifications", "/console/notifications?tab=dead",
                 f"/console/notifications/{dead}"):
        page.goto(console.url + path)
        expect(page.locator("header .who")).to_have_text("viewer (read)")
        assert page.locator("button[data-action]").count() == 0, path
        assert page.locator("#bulk-open, #bulk-dialog").count() == 0, path
        assert page.locator("nav.sections a", has_text="Audit").count() == 0, path
    response = page.goto(console.url + "/console/audit")
    assert response.status == 403
    expect(page.locator("h1")).to_have_text("Not allowed")
    save_screenshot(page, "console-audit-forbidden")

    # Given an admin session in the same browser
    page.goto(console.url + "/console/")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign out").click()
    sign_in(page, console.url, "admin-key", "/console/notifications?tab=dead")
    expect(page.locator(f'button[data-action="requeue"][data-id="{dead}"]')).to_be_visible()
    requeue_url = f"{console.url}/api/v1/notifications/{dead}/requeue"
    # When the page's own script posts the requeue without the session's CSRF token
    status, body = page.evaluate("""async (url) => {
        const r = await fetch(url, {method: 'POST', credentials: 'same-origin'});
        return [r.status, await r.json()];
    }""", requeue_url)
    # Then it is refused
    assert (status, body["error"]) == (403, "csrf_failed"), body
    assert row_of(sessions, dead).status == "dead"

    # When a page of another origin, in the same browser, posts a form to the requeue URL (the session
    # cookie goes along: 127.0.0.1 on another port is the same site) and fetches it with credentials
    forged = {
        "/form": f'<!doctype html><title>win</title><form method="post" action="{requeue_url}">'
                 '<input type="hidden" name="csrf_token" value="guessed"></form>'
                 "<script>document.forms[0].submit()</script>",
        "/fetch": f"<!doctype html><title>win</title><script>fetch('{requeue_url}', "
                  "{method: 'POST', credentials: 'include', mode: 'no-cors'})</script>",
    }
    with other_origin(forged) as attacker:
        for path in forged:
            with page.expect_response(requeue_url) as answer:
                page.goto(attacker + path)
            # Then the API refuses it as a cross-origin request
            assert answer.value.status == 403, path
            if path == "/form":  # Playwright cannot read the body of the no-cors fetch
                assert answer.value.json()["error"] == "cross_origin"
    # And the row is still a dead letter, in the database and on the console, and nothing was audited
    assert row_of(sessions, dead).status == "dead"
    assert row_of(sessions, sent).status == "sent"
    page.goto(console.url + "/console/notifications?tab=dead")
    assert [(r["id"], r["status"]) for r in rows(page)] == [(dead, "dead")]
    page.goto(console.url + "/console/audit")
    expect(page.locator("#live")).to_contain_text("Nothing audited yet.")


def test_markup_in_message_and_errors_renders_as_text(sessions, console, page):
    message = "<img src=x onerror=alert(1)>"
    last_error = "HTTP 500: <script>alert(2)</script>"
    (notification_id,) = insert(sessions, notification(0, "dead", message=message, last_error=last_error))
    started = datetime.now(UTC) - timedelta(minutes=5)
    with sessions.begin() as s:
        s.execute(attempts.insert(), {"notification_id": notification_id, "attempt": 5, "started_at": started,
                                      "finished_at": started + timedelta(milliseconds=120), "outcome": "dead",
                                      "error_class": "transient", "error": last_error, "status_code": 500,
                                      "duration_ms": 120, "worker": "w1"})
    opened = dialogs(page)
    sign_in(page, console.url, "admin-key", "/console/notifications?tab=dead")

    def assert_shown_as_text(where: str) -> None:
        assert opened == [], where
        assert page.locator('img[src="x"]').count() == 0, where
        scripts = page.evaluate("() => Array.from(document.querySelectorAll('script'), (s) => s.src || s.textContent)")
        assert [s.split("?")[0] for s in scripts] == [f"{console.url}/console/static/console.js"], where
        text = page.locator("#live").inner_text()
        assert message in text and last_error in text, where

    assert_shown_as_text("list")
    row = page.locator(f'tr[data-id="{notification_id}"]')
    expect(row.locator("td.message a")).to_have_text(message)
    expect(row.locator("span.last-error")).to_have_attribute("title", last_error)
    # And a refresh by the page's script (auto-refresh switched off and on again) escapes them too
    mark_live_region(page)
    page.uncheck("#auto-refresh")
    page.check("#auto-refresh")
    wait_for_refresh(page)
    assert_shown_as_text("list, refreshed")

    with page.expect_navigation():
        row.locator("td.message a").click()
    assert_shown_as_text("detail")
    expect(page.locator("ol.timeline .error-text")).to_have_text(last_error)
    assert page.locator("dd pre.text").first.inner_text() == message


def test_every_view_passes_axe_is_keyboard_reachable_and_is_captured(sessions, console, page):
    mix = [("dead", "Webhook"), ("dead", "Slack"), ("failed", "Webhook"), ("pending", "Email"), ("sent", "Webhook"),
           ("sent", "Slack"), ("read", "Email")]
    ids = insert(sessions, *(notification(i, status, channel=channel) for i, (status, channel) in enumerate(mix)))
    started = datetime.now(UTC) - timedelta(minutes=30)
    with sessions.begin() as s:
        s.execute(attempts.insert(), [
            {"notification_id": ids[0], "attempt": n, "started_at": started + timedelta(seconds=n),
             "finished_at": started + timedelta(seconds=n, milliseconds=80), "outcome": "dead" if n == 5 else "retry",
             "error_class": "transient", "error": "HTTP 503 from the webhook receiver", "status_code": 503,
             "duration_ms": 80, "worker": "celery@test"} for n in range(1, 6)])
    # an entry for the audit log
    assert console.http.post(f"/api/v1/notifications/{ids[5]}/read").status_code == 200

    def check(name: str) -> None:
        """A screenshot (before the Tab walk moves focus), no serious or critical axe violation, and Tab
        reaching every enabled control in order."""
        save_screenshot(page, f"console-{name}")
        assert axe_violations(page) == [], name
        assert tab_order(page) == enabled_controls(page), name

    page.goto(console.url + "/console/")
    expect(page.locator("#key")).to_be_focused()
    check("signin")
    page.fill("#key", "admin-key")
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()
    page.uncheck("#auto-refresh")  # no refresh replaces the DOM while axe or the Tab walk reads it
    expect(page.locator(".health-box .health-state")).to_be_visible()
    check("overview")
    for tab in ("all", "pending", "failed", "dead", "sent", "read"):
        page.goto(f"{console.url}/console/notifications?tab={tab}")
        check(tab)  # the filter form's date fields take one Tab per part: tab_order counts each once
    page.goto(f"{console.url}/console/notifications/{ids[0]}")
    expect(page.locator("ol.timeline .attempt-step")).to_have_count(5)
    check("detail")
    page.goto(console.url + "/console/workers")
    expect(page.locator("#live .health-state")).to_be_visible()
    check("workers")
    page.goto(console.url + "/console/audit")
    expect(page.locator("#live tbody tr")).to_have_count(1)
    expect(page.locator("#live .range")).to_have_text("1 entry, newest first.")
    check("audit")

    page.goto(f"{console.url}/console/notifications")
    controls = enabled_controls(page)  # what check("all") found Tab to reach
    assert 'button#bulk-open "Requeue all 2 dead…"' in controls
    assert {f'button "Requeue {i}"' for i in ids[:3]} <= set(controls)
    assert {f'a "{m}"' for m in ("Pending 1", "Failed 1", "Dead letter 2", "Sent 1", "Read 2")} <= set(controls)
    page.click("#bulk-open")
    expect(page.locator("#bulk-question")).to_have_text("Requeue 2 dead notifications?")
    expect(page.locator("#bulk-confirm")).to_be_focused()
    check("bulk")
