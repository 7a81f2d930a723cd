"""The notifications view's state, read from the URL (so a view can be shared) and checked like the API's
parameters: a bad value is a 400 naming it, never a silent default."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from api import params
from api.errors import ApiError
from certctl_notify.model import AlertType, Channel, Status
from certctl_notify.store.listing import NotificationFilter

#: (tab, label, statuses it shows), in the order the tabs are drawn.
TABS = (
    ("all", "All", ()),
    ("pending", "Pending", (Status.PENDING.value,)),
    ("failed", "Failed", (Status.FAILED.value,)),
    ("dead", "Dead letter", (Status.DEAD.value,)),
    ("sent", "Sent", (Status.SENT.value,)),
    ("read", "Read", (Status.READ.value,)),
)
_STATUSES = {tab: statuses for tab, _, statuses in TABS}
#: Rows per page in the console.
PER_PAGE = 50
#: Most rows an operator acted on that stay in view after they leave the tab (``keep=``).
MAX_KEPT = 20


@dataclass(frozen=True)
class View:
    """One notifications view: a tab, its filters, a page and the moment the paging is pinned to."""

    tab: str = "all"
    channel: str | None = None
    type: str | None = None
    certificate_id: str | None = None
    q: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    page: int = 1  #: shown as "Page n"; the rows come from ``cursor`` when there is one, else by offset
    as_of: datetime | None = None
    cursor: str | None = None  #: keyset position (the "Older" link): a deep page costs what page 1 costs

    @property
    def statuses(self) -> tuple[str, ...]:
        return _STATUSES[self.tab]

    @property
    def filtered(self) -> bool:
        """Whether any filter besides the tab is set."""
        return any(v is not None for v in (self.channel, self.type, self.certificate_id, self.q,
                                           self.created_after, self.created_before))

    def store_filter(self, *, as_of: datetime | None) -> NotificationFilter:
        return NotificationFilter(statuses=self.statuses, channel=self.channel, type=self.type,
                                  certificate_id=self.certificate_id, q=self.q, created_after=self.created_after,
                                  created_before=self.created_before, as_of=as_of)

    def args(self, **changes) -> dict[str, str]:
        """The query string of this view with ``changes`` (None drops a parameter); defaults left out."""
        view = replace(self, **changes)
        values = {"tab": None if view.tab == "all" else view.tab, "channel": view.channel, "type": view.type,
                  "certificate_id": view.certificate_id, "q": view.q,
                  "created_after": _iso(view.created_after), "created_before": _iso(view.created_before),
                  "page": None if view.page == 1 else str(view.page), "as_of": _iso(view.as_of),
                  "cursor": view.cursor}
        return {k: v for k, v in values.items() if v is not None}

    def bulk_body(self) -> dict:
        """The body of the bulk requeue (and its dry run) for this view's dead rows."""
        body = {"status": "dead", "channel": self.channel, "type": self.type, "certificate_id": self.certificate_id,
                "q": self.q, "created_after": _iso(self.created_after), "created_before": _iso(self.created_before)}
        return {k: v for k, v in body.items() if v is not None}

    def bulk_noun(self) -> str:
        """How the bulk dialog names the rows: "dead Slack notifications of type RenewalFailure"."""
        words = ["dead", self.channel or "", "notifications"]
        extra = [f"of type {self.type}" if self.type else "",
                 f"for certificate {self.certificate_id}" if self.certificate_id else "",
                 f"whose last error contains “{self.q}”" if self.q else "",
                 f"created from {_iso(self.created_after)}" if self.created_after else "",
                 f"created before {_iso(self.created_before)}" if self.created_before else ""]
        return " ".join(w for w in words + extra if w)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def _blank_is_none(args, name: str) -> str | None:
    value = args.get(name)
    return None if value is None or value.strip() == "" else value.strip()


def from_args(args) -> View:
    """The view a query string names; the filter form sends empty fields, which mean "any".

    Raises:
        ApiError 400: naming the parameter that is not valid.
    """
    tab = _blank_is_none(args, "tab") or "all"
    if tab not in _STATUSES:
        raise ApiError(400, "bad_parameter", f"tab {tab!r} is not one of: {', '.join(_STATUSES)}")
    raw = {name: _blank_is_none(args, name) for name in
           ("channel", "type", "certificate_id", "q", "created_after", "created_before", "page", "as_of", "cursor")}
    page = 1
    if raw["page"] is not None:
        if not raw["page"].isdigit() or not 1 <= int(raw["page"]) <= params.MAX_PAGE:
            raise ApiError(400, "bad_parameter", f"page must be a whole number between 1 and {params.MAX_PAGE}")
        page = int(raw["page"])
    return View(
        tab=tab,
        channel=params.choice("channel", raw["channel"], Channel),
        type=params.choice("type", raw["type"], AlertType),
        certificate_id=params.text("certificate_id", raw["certificate_id"]),
        q=params.text("q", raw["q"]),
        created_after=params.timestamp("created_after", raw["created_after"]),
        created_before=params.timestamp("created_before", raw["created_before"]),
        page=page,
        as_of=params.timestamp("as_of", raw["as_of"]),
        cursor=params.text("cursor", raw["cursor"]),
    )


def kept_ids(args) -> tuple[str, ...]:
    """Ids of rows the operator just acted on, kept in view while their new state settles."""
    ids = tuple(dict.fromkeys(i for i in (args.get("keep") or "").split(",") if i and "\x00" not in i))
    return ids[:MAX_KEPT]
