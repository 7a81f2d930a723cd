"""The console through Flask's test client on the real database: sign-in, CSRF, what each key sees,
alert text rendered as text, and views that read the URL. The browser tests drive the same pages in
chromium (test_console_browser.py)."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser

import pytest

from api.app import create_app
from api.console import timeline
from api.console.templating import attempt_number
from certctl_notify import store
from certctl_notify.environment import load_settings
from certctl_notify.errors import ConfigError
from certctl_notify.model import attempts
from tests.api.conftest import ADMIN
from tests.support.rows import insert_dead_in_bulk

SECRET = "s" * 40


@pytest.fixture
def app(make_env, sessions, broker_url):
    return create_app(load_settings(make_env(CERTCTL_CONSOLE_SECRET=SECRET)))


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


def sign_in(client, key: str, next_path: str = "/console/"):
    form = client.get("/console/sign-in").get_data(as_text=True)
    return client.post("/console/sign-in", data={"key": key, "next": next_path, "csrf_token": csrf_of(form)})


@pytest.fixture
def admin(app):
    client = app.test_client()
    assert sign_in(client, "admin-key").status_code == 302
    return client


@pytest.fixture
def viewer(app):
    client = app.test_client()
    assert sign_in(client, "read-key").status_code == 302
    return client


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes."""

    def __init__(self, html: str):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def all(self, tag: str, **attrs) -> list[dict]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def status_of(sessions, notification_id: str) -> str:
    with sessions.begin() as s:
        return store.get(s, notification_id).status


# --- sign-in ------------------------------------------------------------------------------------


def test_the_root_leads_to_the_console_and_a_stranger_to_the_sign_in_form(app):
    client = app.test_client()
    assert client.get("/").headers["Location"] == "/console/"
    response = client.get("/console/notifications?tab=dead")
    assert response.status_code == 302
    assert response.headers["Location"] == "/console/sign-in?next=/console/notifications?tab%3Ddead"
    # the page's script asking for a live region gets a 401 it can explain, not a sign-in form
    fragment = client.get("/console/notifications", headers={"X-Console-Fragment": "1"})
    assert fragment.status_code == 401 and fragment.json["error"] == "unauthorized"


def test_a_wrong_key_signs_nobody_in_and_a_right_one_returns_to_the_page_asked_for(app):
    client = app.test_client()
    refused = sign_in(client, "not-a-key")
    assert refused.status_code == 401 and "not a valid API key" in refused.get_data(as_text=True)
    assert client.get("/console/").status_code == 302
    accepted = sign_in(client, "admin-key", "/console/notifications?tab=dead")
    assert accepted.headers["Location"] == "/console/notifications?tab=dead"
    page = client.get("/console/").get_data(as_text=True)
    assert "ops (admin)" in page


def test_sign_in_never_redirects_to_another_site_and_needs_its_form_token(app):
    client = app.test_client()
    assert sign_in(client, "admin-key", "https://evil.example/").headers["Location"] == "/console/"
    other = app.test_client()
    assert other.post("/console/sign-in", data={"key": "admin-key"}).status_code == 403
    assert other.get("/console/").status_code == 302


def test_a_session_ends_when_its_key_is_removed_or_it_expires(app, make_env, sessions, broker_url, admin):
    assert admin.get("/console/").status_code == 200
    # the same cookie against an API whose keys no longer include ops'
    rotated = create_app(load_settings(make_env(CERTCTL_CONSOLE_SECRET=SECRET,
                                                CERTCTL_API_KEYS="viewer:read-key:read")))
    cookie = admin.get_cookie("certctl_console")
    client = rotated.test_client()
    client.set_cookie("certctl_console", cookie.value)
    assert client.get("/console/").status_code == 302
    # and once older than CERTCTL_CONSOLE_SESSION (12 h by default)
    with admin.session_transaction() as session:
        session["at"] = time.time() - 13 * 3600
    assert admin.get("/console/").status_code == 302


def test_sign_out_needs_the_token_so_no_other_page_can_sign_you_out(admin):
    assert admin.post("/console/sign-out").status_code == 302
    assert admin.get("/console/").status_code == 200
    token = csrf_of(admin.get("/console/").get_data(as_text=True))
    admin.post("/console/sign-out", data={"csrf_token": token})
    assert admin.get("/console/").status_code == 302


def test_auth_off_opens_the_console_directly(make_env, sessions, broker_url):
    client = create_app(load_settings(make_env(CERTCTL_AUTH_TYPE="none"))).test_client()
    page = client.get("/console/")
    assert page.status_code == 200 and "auth off" in page.get_data(as_text=True)
    assert client.get("/console/sign-in").status_code == 302


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CERTCTL_CONSOLE_SECRET", "short", "at least 32 characters"),
    ("CERTCTL_CONSOLE_SESSION", "0s", "more than 0"),
])
def test_console_settings_are_checked_at_start(make_env, name, value, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(make_env(**{name: value}))


# --- forgery ------------------------------------------------------------------------------------


def test_a_session_request_without_the_csrf_token_is_refused_and_changes_nothing(admin, make_row, sessions):
    row = make_row("dead", retry_count=5)
    refused = admin.post(f"/api/v1/notifications/{row.id}/requeue")
    assert refused.status_code == 403 and refused.json["error"] == "csrf_failed"
    wrong = admin.post(f"/api/v1/notifications/{row.id}/requeue", headers={"X-CSRF-Token": "guess"})
    assert wrong.status_code == 403
    assert status_of(sessions, row.id) == "dead"
    token = csrf_of(admin.get("/console/").get_data(as_text=True))
    accepted = admin.post(f"/api/v1/notifications/{row.id}/requeue", headers={"X-CSRF-Token": token})
    assert accepted.status_code == 200 and status_of(sessions, row.id) == "pending"


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},
    {"Origin": "http://localhost:9999"},  # another port is another origin
    {"Sec-Fetch-Site": "cross-site"},
    {"Sec-Fetch-Site": "same-site"},
])
def test_a_state_change_sent_by_another_sites_page_is_refused_whatever_credential_it_carries(
        admin, make_row, sessions, headers):
    row = make_row("dead", retry_count=5)
    token = csrf_of(admin.get("/console/").get_data(as_text=True))
    for extra in ({"X-CSRF-Token": token}, ADMIN):
        response = admin.post(f"/api/v1/notifications/{row.id}/requeue", headers={**extra, **headers})
        assert response.status_code == 403 and response.json["error"] == "cross_origin"
    assert status_of(sessions, row.id) == "dead"


def test_scripts_and_same_origin_pages_are_not_mistaken_for_forgeries(http, make_row, sessions):
    row = make_row("dead", retry_count=5)
    same = {**ADMIN, "Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"}
    assert http.post(f"/api/v1/notifications/{row.id}/requeue", headers=same).status_code == 200


# --- what each key sees ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/console/", "/console/notifications", "/console/notifications?tab=dead",
                                  "/console/notifications?tab=sent", "detail"])
def test_a_read_key_sees_no_action_at_all(viewer, admin, make_row, path):
    dead = make_row("dead", retry_count=5)
    make_row("sent", sent_at=datetime.now(UTC))
    make_row("failed", retry_count=2)
    path = f"/console/notifications/{dead.id}" if path == "detail" else path
    read_page = Tags(viewer.get(path).get_data(as_text=True))
    assert read_page.all("button", **{"data-action": "requeue"}) == []
    assert read_page.all("button", **{"data-action": "read"}) == []
    assert read_page.all("button", id="bulk-open") == [] and read_page.all("dialog") == []
    assert read_page.all("a", href="/console/audit") == []
    # while an admin has them on the same page
    admin_page = Tags(admin.get(path).get_data(as_text=True))
    assert [b for b in admin_page.all("button") if "data-action" in b]


def test_the_audit_log_is_for_admins(viewer, admin, make_row):
    row = make_row("dead", retry_count=5)
    token = csrf_of(admin.get("/console/").get_data(as_text=True))
    admin.post(f"/api/v1/notifications/{row.id}/requeue", headers={"X-CSRF-Token": token})
    assert viewer.get("/console/audit").status_code == 403
    page = admin.get("/console/audit").get_data(as_text=True)
    assert "requeue" in page and row.id in page and ">ops<" in page


# --- alert text is text ---------------------------------------------------------------------------

HOSTILE = {
    "message": "<img src=x onerror=alert(1)>",
    "last_error": "</span><script>alert(2)</script>",
    "recipient": "\"><svg onload=alert(3)>",
    "subject": "<b>bold</b>",
}


@pytest.mark.parametrize("path", ["/console/notifications?tab=dead", "/console/", "detail"])
def test_alert_text_is_rendered_as_text_never_as_markup(admin, make_row, path):
    row = make_row("dead", retry_count=5, **HOSTILE)
    path = f"/console/notifications/{row.id}" if path == "detail" else path
    response = admin.get(path)
    html = response.get_data(as_text=True)
    page = Tags(html)
    assert page.all("img") == [] and page.all("svg", onload="alert(3)") == []
    assert all("src" in s for s in page.all("script")), "no inline script on any page"
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "alert(2)" not in html.replace("&lt;script&gt;alert(2)&lt;/script&gt;", "")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp


# --- views ----------------------------------------------------------------------------------------


def test_tabs_count_what_the_filters_match_and_list_only_their_status(admin, make_row):
    for status, channel in [("dead", "Webhook"), ("dead", "Slack"), ("dead", "Slack"), ("sent", "Slack"),
                            ("failed", "Webhook")]:
        make_row(status, channel=channel, retry_count=1)
    page = admin.get("/console/notifications?tab=dead&channel=Slack").get_data(as_text=True)
    tags = Tags(page)
    assert {r["data-status"] for r in tags.all("tr") if "data-id" in r} == {"dead"}
    assert len([r for r in tags.all("tr") if "data-id" in r]) == 2
    counts = dict(re.findall(r'data-tab="(\w+)".*?<span class="count">([\d,]+)</span>', page))
    assert counts == {"all": "3", "pending": "0", "failed": "0", "dead": "2", "sent": "1", "read": "0"}
    assert "Requeue all 2 dead" in page


def test_empty_filter_fields_mean_any_and_a_bad_one_is_named(admin, make_row):
    make_row("dead")
    assert admin.get("/console/notifications?channel=&type=&q=&created_after=").status_code == 200
    bad = admin.get("/console/notifications?channel=Fax")
    assert bad.status_code == 400 and "channel &#39;Fax&#39; is not one of" in bad.get_data(as_text=True)
    fragment = admin.get("/console/notifications?tab=nope", headers={"X-Console-Fragment": "1"})
    assert fragment.status_code == 400 and fragment.json["error"] == "bad_parameter"
    assert admin.get("/console/notifications?created_after=yesterday").status_code == 400


def test_paging_stays_on_the_same_rows_while_new_ones_arrive(admin, make_row):
    base = datetime.now(UTC) - timedelta(minutes=10)
    old = [make_row("dead", created_at=base + timedelta(seconds=i)).id for i in range(60)]
    first = admin.get("/console/notifications?tab=dead").get_data(as_text=True)
    older = re.search(r'href="([^"]+)" rel="next"', first).group(1).replace("&amp;", "&")
    assert "as_of=" in older and "cursor=" in older  # older pages by keyset
    for _ in range(5):  # alerts arriving while the operator reads page 1
        make_row("dead")
    second = Tags(admin.get(older).get_data(as_text=True))
    ids = [r["data-id"] for r in second.all("tr") if "data-id" in r]
    assert ids == list(reversed(old[:10]))
    # and the way back to page 1 shows the same first 50 (by offset), still pinned
    newer = re.search(r'href="([^"]+)" rel="prev"', admin.get(older).get_data(as_text=True)).group(1)
    back = Tags(admin.get(newer.replace("&amp;", "&")).get_data(as_text=True))
    assert [r["data-id"] for r in back.all("tr") if "data-id" in r] == list(reversed(old[10:]))
    assert admin.get("/console/notifications?cursor=bogus").status_code == 400


def test_a_row_acted_on_stays_in_view_marked_after_it_leaves_the_tab(admin, make_row):
    moved = make_row("sent", sent_at=datetime.now(UTC))
    make_row("dead")
    page = admin.get(f"/console/notifications?tab=dead&keep={moved.id}",
                     headers={"X-Console-Fragment": "1"}).get_data(as_text=True)
    [row] = [r for r in Tags(page).all("tr") if r.get("data-id") == moved.id]
    assert row["class"] == "outside" and row["data-status"] == "sent"
    assert "no longer in this view" in page and "<html" not in page  # the live region only


def test_the_detail_shows_every_attempt_and_the_waits_between_them(admin, make_row, sessions):
    start = datetime.now(UTC) - timedelta(minutes=5)
    row = make_row("failed", retry_count=2, last_error="HTTP 503 from http://x/…",
                   next_retry_at=start + timedelta(minutes=9))
    with sessions.begin() as s:
        for n, (began, outcome, code) in enumerate([(0, "retry", 503), (61, "retry", 502)], start=1):
            s.execute(attempts.insert(), {
                "notification_id": row.id, "attempt": n, "started_at": start + timedelta(seconds=began),
                "finished_at": start + timedelta(seconds=began + 1), "outcome": outcome, "status_code": code,
                "error_class": "transient", "error": f"HTTP {code}", "duration_ms": 1000, "worker": "celery@w1"})
    page = admin.get(f"/console/notifications/{row.id}").get_data(as_text=True)
    assert page.count('class="attempt-step') == 3  # two made, one waiting
    assert "waited 1 min" in page and "HTTP 502" in page and "celery@w1" in page
    assert "Attempt 3</strong> due" in page and "Attempt 2/5" in page
    assert admin.get("/console/notifications/notif_nope").status_code == 404


def test_bulk_requeue_narrows_to_a_certificate_like_the_view_does(http, make_row):
    for certificate in ("c-1", "c-1", "c-2"):
        make_row("dead", certificate_id=certificate)
    body = {"status": "dead", "certificate_id": "c-1", "dry_run": True}
    assert http.post("/api/v1/notifications/requeue", json=body, headers=ADMIN).json["matched"] == 2


def test_worker_health_is_red_when_no_worker_answers(admin):
    fragment = admin.get("/console/workers/health", headers={"X-Console-Fragment": "1"}).get_data(as_text=True)
    assert "No worker answers" in fragment and 'role="alert"' in fragment


# --- units ----------------------------------------------------------------------------------------


def _row(status, retry_count, sent=False, next_retry_at=None):
    return type("Row", (), {"status": status, "retry_count": retry_count, "next_retry_at": next_retry_at,
                            "sent_at": datetime.now(UTC) if sent else None})()


@pytest.mark.parametrize(("row", "expected"), [
    (_row("pending", 0), 1), (_row("failed", 2), 2), (_row("sent", 2, sent=True), 3), (_row("dead", 5), 5),
    (_row("read", 5), 5), (_row("read", 0, sent=True), 1),
])
def test_attempt_n_of_max_counts_the_attempt_that_runs_delivered_or_was_last(row, expected):
    assert attempt_number(row) == expected


def test_a_requeue_restarts_the_timeline_without_a_wait():
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def record(n, at):
        return type("A", (), {"attempt": n, "started_at": t0 + timedelta(seconds=at),
                              "finished_at": t0 + timedelta(seconds=at + 1), "id": uuid.uuid4().hex})()

    steps = timeline.build(_row("sent", 0, sent=True), [record(1, 0), record(2, 60), record(1, 900)])
    assert [(s.attempt, s.wait_seconds, s.after_requeue) for s in steps] == [
        (1, None, False), (2, 59.0, False), (1, None, True)]


def test_a_database_outage_is_a_page_saying_so_and_the_console_recovers(make_env, sessions, broker_url,
                                                                          database_proxy):
    proxy, proxied_url = database_proxy
    client = create_app(load_settings(make_env(CERTCTL_DATABASE_URL=proxied_url))).test_client()
    sign_in(client, "admin-key")
    assert client.get("/console/notifications").status_code == 200
    proxy.cut()
    page = client.get("/console/notifications")
    assert page.status_code == 503 and "The database cannot be reached" in page.get_data(as_text=True)
    fragment = client.get("/console/notifications", headers={"X-Console-Fragment": "1"})
    assert fragment.status_code == 503 and fragment.json["error"] == "database_unavailable"
    proxy.restore()
    assert client.get("/console/notifications").status_code == 200


def test_static_files_are_cached_for_good_under_urls_that_change_with_their_content(admin):
    page = Tags(admin.get("/console/").get_data(as_text=True))
    [script] = page.all("script")
    [sheet] = [link for link in page.all("link") if link.get("rel") == "stylesheet"]
    for url, name in ((script["src"], "console.js"), (sheet["href"], "console.css")):
        assert re.fullmatch(rf"/console/static/{name}\?v=[0-9a-f]{{12}}", url)
        response = admin.get(url)
        assert response.status_code == 200 and "max-age=31536000" in response.headers["Cache-Control"]


def test_a_filter_matching_more_than_ten_thousand_rows_shows_a_lower_bound(admin, sessions):
    insert_dead_in_bulk(sessions, 10_050, channel="Slack")
    page = admin.get("/console/notifications?tab=dead&channel=Slack").get_data(as_text=True)
    counts = dict(re.findall(r'data-tab="(\w+)".*?<span class="count">([\d,+]+)</span>', page))
    assert (counts["dead"], counts["all"], counts["sent"]) == ("10,000+", "10,000+", "0")
    assert "of 10,000+" in page and "Requeue 10,000+ dead" in page
    unfiltered = admin.get("/console/notifications?tab=dead").get_data(as_text=True)
    assert "of 10,050," in unfiltered  # the maintained counts are exact
