"""The console's pages: overview, notifications (list and detail), workers, audit log."""

from __future__ import annotations

from flask import render_template, request, url_for

from api import inspector, params
from api.console import bp, chart, filters, timeline
from api.console.access import is_fragment, page
from api.deps import deps
from api.errors import ApiError
from certctl_notify import store
from certctl_notify.broker_urls import is_embedded_broker
from certctl_notify.model import AlertType, Channel, Status, utcnow
from certctl_notify.store.listing import NotificationFilter

#: Dead letters listed on the overview.
LATEST_DEAD = 5


def _max_attempts() -> int:
    return deps().settings.retry.max_attempts


def _render(template: str, live: str, **context):
    """The whole page, or only its live region when the page's script asks for a refresh."""
    return render_template(live if is_fragment() else template, max_attempts=_max_attempts(), **context)


@bp.get("/")
@page()
def overview():
    """Counts, the last 24 hours drawn per channel, worker health, and the latest dead letters."""
    now = utcnow()
    with deps().sessions.begin() as session:
        summary = store.summary(session, now=now)
        hours = store.hourly_outcomes(session, now=now)
        latest_dead = store.list_notifications(session, NotificationFilter(statuses=(Status.DEAD.value,)),
                                               per_page=LATEST_DEAD).rows
    charts = [(None, chart.activity_svg(hours))]
    charts += [(name, chart.activity_svg(hours, channel=name, width=440, height=150))
               for name in chart.channels_with_activity(hours)]
    return _render("console/overview.html", "console/_overview_live.html", active="overview", summary=summary,
                   charts=charts, latest_dead=latest_dead, checked_at=now)


@bp.get("/notifications")
@page()
def notifications():
    """One tab of notifications with its filters, pinned to ``as_of`` so paging is stable while rows arrive."""
    view = filters.from_args(request.args)
    as_of = view.as_of or utcnow()
    keep = filters.kept_ids(request.args)
    with deps().sessions.begin() as session:
        counts, capped = store.counts_by_status(session, view.store_filter(as_of=None))
        try:
            found = store.list_notifications(session, view.store_filter(as_of=as_of), per_page=filters.PER_PAGE,
                                             page=1 if view.cursor else view.page, cursor=view.cursor)
        except ValueError as exc:  # a cursor edited by hand
            raise ApiError(400, "bad_parameter", str(exc)) from None
        kept = store.list_notifications(session, NotificationFilter(ids=keep),
                                        per_page=filters.MAX_KEPT).rows if keep else []
    rows, total = found.rows, found.total
    shown = {r.id for r in rows}
    # rows the operator just acted on stay visible (marked) after they leave this tab
    outside = {r.id for r in kept if r.id not in shown}
    rows = sorted([*rows, *(r for r in kept if r.id in outside)], key=lambda r: (r.created_at, r.id), reverse=True)
    def shown(n: int, lower_bound: bool) -> str:
        return f"{n:,}+" if lower_bound else f"{n:,}"

    tabs = [(tab, label, shown(sum(counts.values()), bool(capped)) if not statuses
             else shown(counts[statuses[0]], statuses[0] in capped),
             url_for("console.notifications", **view.args(tab=tab, page=1, as_of=None, cursor=None)))
            for tab, label, statuses in filters.TABS]
    pages = {
        "first": view.page == 1, "from": (view.page - 1) * filters.PER_PAGE + 1 if rows else 0,
        "to": (view.page - 1) * filters.PER_PAGE + len(rows) - len(outside),
        "total": total, "total_shown": shown(total, not found.total_exact),
        # older pages by keyset (flat at any depth), newer by offset from the top (rarely deep)
        "prev": url_for("console.notifications", **view.args(page=view.page - 1, as_of=as_of, cursor=None))
        if view.page > 1 else None,
        "next": url_for("console.notifications", **view.args(page=view.page + 1, as_of=as_of,
                                                             cursor=found.next_cursor))
        if found.next_cursor else None,
        "newest": url_for("console.notifications", **view.args(page=1, as_of=None, cursor=None))
        if view.as_of else None,
    }
    return _render("console/notifications.html", "console/_notifications_live.html", active="notifications",
                   view=view, tabs=tabs, rows=rows, outside=outside, pages=pages, as_of=as_of,
                   dead_count=counts[Status.DEAD.value],
                   dead_capped=Status.DEAD.value in capped, channels=[c.value for c in Channel],
                   types=[t.value for t in AlertType])


@bp.get("/notifications/<notification_id>")
@page()
def detail(notification_id: str):
    """Every field of one notification and its attempts as a timeline."""
    params.no_nul_in_path(None, {"id": notification_id})
    with deps().sessions.begin() as session:
        row = store.get(session, notification_id)
        history = list(store.list_attempts(session, notification_id)) if row is not None else []
    if row is None:
        raise ApiError(404, "not_found", f"notification {notification_id} does not exist")
    return _render("console/detail.html", "console/_detail_live.html", active="notifications", row=row,
                   steps=timeline.build(row, history), now=utcnow())


def _worker_state() -> tuple[dict, dict]:
    """(the inspector's view, the at-a-glance health); the embedded broker cannot broadcast, so it is not asked."""
    found = deps()
    embedded = is_embedded_broker(found.settings.broker_url)
    if embedded:
        view = {"status": "unavailable", "reason": "the embedded SQLite broker cannot ask workers",
                "checked_at": utcnow().isoformat(), "timeout_seconds": 0, "workers": [], "queues": None}
    else:
        view = inspector.workers_view(found.producer, timeout=found.settings.monitor.inspect_timeout_seconds)
    with found.sessions.begin() as session:
        last = store.last_finished_attempt(session)
    busy = sum(1 for w in view["workers"] if w.get("active"))
    health = {"ok": view["status"] == "ok", "embedded": embedded, "count": len(view["workers"]), "busy": busy,
              "idle": len(view["workers"]) - busy, "reason": view["reason"], "last": last,
              "last_age": (utcnow() - last.finished_at).total_seconds() if last else None}
    return view, health


@bp.get("/workers")
@page()
def workers():
    """Workers (loaded by the page's script: asking them takes up to the inspect timeout) and queue depths."""
    if not is_fragment():
        return render_template("console/workers.html", active="workers")
    view, health = _worker_state()
    return render_template("console/_workers_live.html", view=view, health=health)


@bp.get("/workers/health")
@page()
def worker_health():
    """The overview's at-a-glance worker state, as a fragment."""
    view, health = _worker_state()
    return render_template("console/_worker_health.html", health=health, view=view)


@bp.get("/audit")
@page("admin")
def audit():
    """Who did what, newest first."""
    page_number = params.integer("page", 1, minimum=1, maximum=params.MAX_PAGE)
    with deps().sessions.begin() as session:
        total, rows = store.list_audit(session, page=page_number, per_page=filters.PER_PAGE)
    return _render("console/audit.html", "console/_audit_live.html", active="audit", rows=rows, total=total,
                   page=page_number, per_page=filters.PER_PAGE)
