"""What an operator notices on the read side of the API: finding rows, true totals, stable paging,
bad paging refused, mark read, stats and the audit log, and refused requests that change nothing."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest
import redis
from sqlalchemy import func, select, text

from certctl_notify import store
from certctl_notify.model import events
from certctl_notify.store.listing import NotificationFilter, filter_clauses
from tests.api.conftest import ADMIN, READ
from tests.support.rows import insert_dead_in_bulk

LIST = "/api/v1/notifications"
STATUSES = ["pending", "sent", "failed", "dead", "read"]
CHANNELS = ["Webhook", "Slack", "Email"]
TYPES = ["RenewalFailure", "ExpirationWarning", "Revocation", "DeploymentFailure"]
ERRORS = ["HTTP 503 from receiver", "connection refused", None, "HTTP 410 Gone"]


def row_values(status: str, created_at: datetime, **values) -> dict:
    return {"id": f"notif_{uuid.uuid4().hex}", "type": "RenewalFailure", "channel": "Webhook",
            "recipient": "", "message": "renewal failed", "status": status, "retry_count": 0,
            "created_at": created_at, "updated_at": created_at, "dispatched_at": created_at,
            "sent_at": created_at if status in ("sent", "read") else None, **values}


@pytest.fixture
def insert(sessions):
    """Insert rows (dicts from `row_values`) in one transaction; returns them as they were stored."""

    def run(rows: list[dict]) -> list:
        with sessions.begin() as s:
            return [store.insert_notification(s, row) for row in rows]

    return run


@pytest.fixture
def dataset(insert):
    """60 rows spread over every status, three channels, four types, six certificates and four errors;
    pairs of rows share a created_at, so the id tie-break matters."""
    base = datetime.now(UTC) - timedelta(hours=1)
    return insert([row_values(STATUSES[i % 5], base - timedelta(seconds=i // 2), channel=CHANNELS[i % 3],
                              type=TYPES[i % 4], certificate_id=f"mc-{i % 6}", last_error=ERRORS[i % 4])
                   for i in range(60)])


def newest_first(rows) -> list[str]:
    return [r.id for r in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)]


def all_pages(http, query: dict, per_page: int = 7, between_pages=lambda: None) -> tuple[list, list]:
    """Every page of a listing, passing back the first page's ``as_of``; returns (rows, page bodies)."""
    first = http.get(f"{LIST}?{urlencode({**query, 'per_page': per_page})}", headers=READ).json
    bodies, rows, page = [first], list(first["data"]), 1
    while page * per_page < first["total"]:
        between_pages()
        page += 1
        later = {**query, "per_page": per_page, "page": page, "as_of": first["as_of"]}
        body = http.get(f"{LIST}?{urlencode(later)}", headers=READ).json
        bodies.append(body)
        rows.extend(body["data"])
    return rows, bodies


def everything(engine, broker_url) -> tuple:
    """The whole state a request could change: every table and every Redis list."""
    with engine.connect() as conn:
        tables = tuple(tuple(map(tuple, conn.execute(text(f"SELECT * FROM {t} ORDER BY 1")).all()))
                       for t in ("notification_events", "notification_attempts", "audit_log", "requeue_jobs"))
    r = redis.Redis.from_url(broker_url)
    lists = {k: r.llen(k) for k in r.keys() if r.type(k) == b"list"}
    return tables, lists


def test_get_one_finds_any_of_two_hundred_rows(http, insert):
    # Given 200 rows
    base = datetime.now(UTC)
    rows = insert([row_values(STATUSES[i % 5], base - timedelta(seconds=i)) for i in range(200)])
    # When each is asked for by id, then each is found, with its own status
    for row in rows:
        response = http.get(f"{LIST}/{row.id}", headers=READ)
        assert response.status_code == 200, row.id
        assert (response.json["id"], response.json["status"]) == (row.id, row.status)


@pytest.mark.parametrize("query", [
    {}, {"status": "dead"}, {"channel": "Slack"}, {"type": "Revocation"}, {"certificate_id": "mc-1"},
    {"q": "http 503"}, {"q": "%"}, {"status": "failed", "channel": "Webhook"},
    {"status": "sent", "type": "RenewalFailure", "certificate_id": "mc-4"},
], ids=lambda q: urlencode(q) or "all")
def test_total_is_the_true_filtered_count_and_pages_hold_exactly_the_matching_rows(http, dataset, query):
    # Given 60 rows, and the rows this filter should match
    def matches(row):
        q = query.get("q")
        return all(getattr(row, name) == value for name, value in query.items() if name != "q") and (
            q is None or (row.last_error is not None and q.lower() in row.last_error.lower()))

    expected = newest_first([r for r in dataset if matches(r)])
    # When the operator pages through them 7 at a time
    rows, bodies = all_pages(http, query)
    # Then every page reports the true filtered total, not its own length
    assert {b["total"] for b in bodies} == {len(expected)}
    assert [len(b["data"]) for b in bodies] == [min(7, len(expected) - 7 * i) for i in range(len(bodies))]
    if len(expected) > 7:
        assert bodies[0]["total"] != len(bodies[0]["data"])
    # And the pages hold exactly the matching rows, newest first
    assert [r["id"] for r in rows] == expected


def test_paging_with_as_of_returns_every_row_once_while_new_rows_arrive(http, insert):
    # Given 30 rows
    base = datetime.now(UTC) - timedelta(minutes=5)
    old = insert([row_values("dead", base - timedelta(seconds=i // 3)) for i in range(30)])
    arrived = []

    def new_alerts_arrive():
        arrived.extend(insert([row_values("pending", datetime.now(UTC)) for _ in range(3)]))

    # When the operator pages through 7 at a time while 3 new alerts arrive before each later page
    rows, bodies = all_pages(http, {}, between_pages=new_alerts_arrive)
    # Then each of the 30 rows appears exactly once, none is skipped, and the total holds still
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) == 30 and set(ids) == {r.id for r in old}
    assert {b["total"] for b in bodies} == {30} and len(bodies) == 5
    # And a fresh listing shows the new arrivals first
    fresh = http.get(f"{LIST}?per_page=9", headers=READ).json
    assert fresh["total"] == 30 + len(arrived) == 42
    assert {r["id"] for r in fresh["data"]} == {r.id for r in arrived[-9:]}


def test_rows_come_newest_first_and_equal_times_by_id_descending(http, insert):
    same = datetime.now(UTC) - timedelta(minutes=1)
    rows = insert([row_values("sent", same, id=f"notif_{c}") for c in "acbed"]
                  + [row_values("sent", same + timedelta(seconds=1), id="notif_0"),
                     row_values("sent", same - timedelta(seconds=1), id="notif_z")])
    body = http.get(f"{LIST}?per_page=3", headers=READ).json
    second = http.get(f"{LIST}?{urlencode({'per_page': 3, 'page': 2, 'as_of': body['as_of']})}", headers=READ)
    listed = [r["id"] for r in body["data"] + second.json["data"]]
    assert listed == ["notif_0", "notif_e", "notif_d", "notif_c", "notif_b", "notif_a"]
    assert listed == newest_first(rows)[:6]


@pytest.mark.parametrize("query, parameter", [
    ("per_page=0", "per_page"), ("per_page=501", "per_page"), ("per_page=x", "per_page"),
    ("page=0", "page"), ("page=x", "page"), ("page=-1", "page"), ("status=lost", "status"),
    ("channel=Fax", "channel"), ("as_of=yesterday", "as_of"),
])
def test_bad_paging_and_unknown_filters_are_400_naming_the_parameter(http, dataset, query, parameter):
    response = http.get(f"{LIST}?{query}", headers=READ)
    assert response.status_code == 400, "refused, not clamped or ignored"
    assert response.json["error"] == "bad_parameter" and response.json["message"].startswith(parameter)


def test_per_page_at_its_bounds_is_served(http, dataset):
    assert len(http.get(f"{LIST}?per_page=1", headers=READ).json["data"]) == 1
    assert len(http.get(f"{LIST}?per_page=500", headers=READ).json["data"]) == 60


@pytest.mark.parametrize("status", ["sent", "dead"])
def test_mark_read_of_a_sent_or_dead_row_makes_it_read(http, insert, status):
    (row,) = insert([row_values(status, datetime.now(UTC))])
    response = http.post(f"{LIST}/{row.id}/read", headers=ADMIN)
    assert response.status_code == 200 and response.json == {"status": "marked_as_read", "id": row.id}
    assert http.get(f"{LIST}/{row.id}", headers=READ).json["status"] == "read"


@pytest.mark.parametrize("status, headers, expected", [
    ("pending", ADMIN, 409), ("failed", ADMIN, 409), ("read", ADMIN, 409), ("sent", READ, 403),
    ("sent", {}, 401),
])
def test_mark_read_refused_changes_nothing(http, insert, engine, broker_url, status, headers, expected):
    (row,) = insert([row_values(status, datetime.now(UTC), next_retry_at=None)])
    before = everything(engine, broker_url)
    response = http.post(f"{LIST}/{row.id}/read", headers=headers)
    assert response.status_code == expected
    if expected == 409:
        assert response.json["error"] == "wrong_state" and status in response.json["message"]
    assert everything(engine, broker_url) == before


def test_mark_read_of_an_unknown_id_is_404(http):
    response = http.post(f"{LIST}/notif_nope/read", headers=ADMIN)
    assert response.status_code == 404 and response.json["error"] == "not_found"


def test_stats_count_each_status_the_oldest_pending_age_and_due_retries(http, insert):
    now = datetime.now(UTC)
    insert([row_values("pending", now - timedelta(seconds=120)), row_values("pending", now),
            row_values("sent", now), *[row_values("dead", now) for _ in range(3)], row_values("read", now),
            row_values("failed", now, next_retry_at=now - timedelta(seconds=5)),
            row_values("failed", now, next_retry_at=now - timedelta(seconds=1)),
            row_values("failed", now, next_retry_at=now + timedelta(minutes=10))])
    stats = http.get("/api/v1/stats/summary", headers=READ).json
    assert {k: v for k, v in stats.items() if k.startswith("notifications_")} == {
        "notifications_pending": 2, "notifications_sent": 1, "notifications_failed": 3,
        "notifications_dead": 3, "notifications_read": 1, "notifications_total": 10}
    assert 120 <= stats["oldest_pending_seconds"] < 180
    assert stats["retries_due"] == 2  # the one due in ten minutes is not due yet


def test_admin_actions_appear_in_the_audit_log_with_the_keys_name(http, insert):
    # Given a dead row and a sent row
    now = datetime.now(UTC)
    dead, sent = insert([row_values("dead", now, retry_count=5), row_values("sent", now)])
    # When the ops key enqueues an alert, requeues the dead row and marks the sent one read
    enqueued = http.post(LIST, json={"type": "ExpirationWarning", "channel": "Webhook", "message": "7 days"},
                         headers={**ADMIN, "X-Request-ID": "req-enqueue"}).json["data"][0]["id"]
    assert http.post(f"{LIST}/{dead.id}/requeue", headers=ADMIN).status_code == 200
    assert http.post(f"{LIST}/{sent.id}/read", headers=ADMIN).status_code == 200
    # Then the audit log names who did what to which row, newest first
    audit = http.get("/api/v1/audit", headers=ADMIN).json
    assert audit["total"] == 3
    assert [(e["actor"], e["action"], e["target"]) for e in audit["data"]] == [
        ("ops", "mark_read", sent.id), ("ops", "requeue", dead.id), ("ops", "enqueue", enqueued)]
    assert audit["data"][2]["request_id"] == "req-enqueue"


def test_the_audit_log_needs_an_admin_key(http):
    assert http.get("/api/v1/audit", headers=READ).status_code == 403
    assert http.get("/api/v1/audit").status_code == 401


def test_every_refused_request_changes_nothing(http, insert, sessions, engine, broker_url):
    # Given rows in each state, a finished bulk requeue job and a running one
    now = datetime.now(UTC)
    pending, sent, dead = insert([row_values("pending", now), row_values("sent", now),
                                  row_values("dead", now, retry_count=5)])
    with sessions.begin() as s:
        for job_id in ("job_done", "job_running"):
            store.insert_job(s, job_id=job_id, filter={}, rate=10.0, matched=0, cutoff=now, actor="ops",
                             now=now)
        store.finish_job(s, "job_done", generation=0, now=now)
    alert = {"type": "ExpirationWarning", "channel": "Webhook", "message": "7 days"}
    refused = [
        ("post", LIST, {}, alert, 401), ("post", LIST, READ, alert, 403),
        ("post", LIST, ADMIN, {**alert, "channel": "Fax"}, 422),
        ("post", LIST, ADMIN, {**alert, "message": "a\x00b"}, 422),
        ("post", LIST, ADMIN, {**alert, "extra": 1}, 422),
        ("post", f"{LIST}/{dead.id}/requeue", {}, None, 401),
        ("post", f"{LIST}/{dead.id}/requeue", READ, None, 403),
        ("post", f"{LIST}/{sent.id}/requeue", ADMIN, None, 409),
        ("post", f"{LIST}/nope/requeue", ADMIN, None, 404),
        ("post", f"{LIST}/{sent.id}/read", READ, None, 403),
        ("post", f"{LIST}/{pending.id}/read", ADMIN, None, 409),
        ("post", f"{LIST}/nope/read", ADMIN, None, 404), ("post", f"{LIST}/a\x00b/read", ADMIN, None, 404),
        ("post", f"{LIST}/requeue", READ, {"status": "dead"}, 403),
        ("post", f"{LIST}/requeue", ADMIN, {"status": "dead"}, 409),
        ("post", f"{LIST}/requeue", ADMIN, {"status": "sent"}, 422),
        ("post", f"{LIST}/requeue", ADMIN, {"ids": ["a\x00"]}, 422),
        ("post", "/api/v1/requeue-jobs/job_running/cancel", READ, None, 403),
        ("post", "/api/v1/requeue-jobs/job_done/cancel", ADMIN, None, 409),
        ("post", "/api/v1/requeue-jobs/job_nope/cancel", ADMIN, None, 404),
        ("get", "/api/v1/audit", READ, None, 403), ("get", f"{LIST}/nope", READ, None, 404),
    ]
    before = everything(engine, broker_url)
    for method, url, headers, body, expected in refused:
        response = http.open(url, method=method.upper(), headers=headers, json=body)
        assert response.status_code == expected, f"{method} {url} {body}: {response.json}"
        assert set(response.json) == {"error", "message", "request_id"}
    assert everything(engine, broker_url) == before


def walk_by_cursor(http, query: dict, *, between_pages=lambda: None) -> tuple[list[dict], list[dict]]:
    """Follow next_cursor from the first page to the last; returns (rows, page bodies)."""
    rows, bodies, cursor = [], [], None
    while True:
        args = {**query, "per_page": 7, **({"cursor": cursor} if cursor else {})}
        body = http.get(f"{LIST}?{urlencode(args)}", headers=READ).json
        bodies.append(body)
        rows.extend(body["data"])
        cursor = body["next_cursor"]
        if cursor is None:
            return rows, bodies
        between_pages()
        query = {**query, "as_of": body["as_of"]}


@pytest.mark.parametrize("query", [{}, {"status": "dead"}, {"channel": "Slack"}])
def test_keyset_paging_walks_every_row_once_while_new_rows_arrive(http, insert, query):
    # Given 40 rows of two statuses and channels, some sharing a creation time
    base = datetime.now(UTC) - timedelta(minutes=5)
    old = insert([row_values(("dead", "sent")[i % 2], base - timedelta(seconds=i // 4),
                             channel=("Slack", "Webhook")[i % 3 == 0]) for i in range(40)])
    expected = {r.id for r in old if all(getattr(r, k) == v for k, v in query.items() if k != "status")
                and (query.get("status") in (None, r.status))}

    def new_alerts_arrive():
        insert([row_values("dead", datetime.now(UTC), channel="Slack") for _ in range(2)])

    # When the operator follows next_cursor (pinned with as_of) while new alerts arrive between pages
    rows, bodies = walk_by_cursor(http, query, between_pages=new_alerts_arrive)
    # Then every matching row comes exactly once, newest first, and the total is exact and still
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)) and set(ids) == expected
    assert [(r["created_at"], r["id"]) for r in rows] == sorted(((r["created_at"], r["id"]) for r in rows),
                                                                reverse=True)
    assert {(b["total"], b["total_exact"]) for b in bodies} == {(len(expected), True)}


def test_a_cursor_page_costs_no_offset_and_bad_cursors_are_refused(http, insert):
    insert([row_values("dead", datetime.now(UTC) - timedelta(seconds=i)) for i in range(3)])
    first = http.get(f"{LIST}?per_page=2", headers=READ).json
    assert http.get(f"{LIST}?per_page=2&cursor={first['next_cursor']}&page=2", headers=READ).status_code == 400
    for bad in ("nonsense", "bm90LWEtY3Vyc29y"):
        response = http.get(f"{LIST}?cursor={bad}", headers=READ)
        assert response.status_code == 400 and "cursor" in response.json["message"]


def test_a_filter_matching_more_than_ten_thousand_rows_reports_a_lower_bound(http, sessions):
    # Given 10,050 Slack rows (a filter the maintained counts cannot answer)
    insert_dead_in_bulk(sessions, 10_050, channel="Slack")
    # Then the filtered total stops counting at 10,000 and says it is a lower bound
    body = http.get(f"{LIST}?channel=Slack&per_page=5", headers=READ).json
    assert (body["total"], body["total_exact"], len(body["data"])) == (10_000, False, 5)
    # while a status-only filter is answered exactly from the maintained counts
    body = http.get(f"{LIST}?status=dead&per_page=5", headers=READ).json
    assert (body["total"], body["total_exact"]) == (10_050, True)


def test_a_search_in_last_error_and_a_rare_channel_are_answered_from_indexes(sessions):
    def plan(f: NotificationFilter) -> str:
        statement = (select(events.c.id).where(*filter_clauses(f))
                     .order_by(events.c.created_at.desc(), events.c.id.desc()).limit(51))
        compiled = statement.compile(dialect=sessions.engine.dialect, compile_kwargs={"literal_binds": True})
        with sessions.begin() as s:
            s.exec_driver_sql("SET LOCAL enable_seqscan = off")  # a tiny test table would be scanned anyway
            return "\n".join(r[0] for r in s.exec_driver_sql(f"EXPLAIN {compiled}"))

    # a substring search reads an index of the rows with an error (the trigram one or the partial one)
    assert "Seq Scan" not in plan(NotificationFilter(q="gateway timeout"))
    assert "idx_notification_events_channel_created" in plan(NotificationFilter(channel="OpsGenie"))
    assert "idx_notification_events_type_created" in plan(NotificationFilter(type="Revocation"))
    with sessions.begin() as s:  # pg_trgm is available to the tests' superuser, so 0012 made its index
        assert s.execute(select(func.count()).select_from(text("pg_indexes")).where(
            text("indexname = 'idx_notification_events_last_error_trgm'"))).scalar_one() == 1
