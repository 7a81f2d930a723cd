"""The OpenAPI 3.1 document of every endpoint the app serves, at ``GET /api/v1/openapi.json`` (no key).

Written by hand and built by small functions; tests/api/test_openapi.py holds it to ``app.url_map`` and
to real responses, so an endpoint or field added without documentation fails the suite.
"""

from __future__ import annotations

from http import HTTPStatus

from flask import Blueprint, jsonify

from api.params import MAX_BODY_BYTES, MAX_PAGE, MAX_PER_PAGE
from api.requeue_jobs import MAX_IDS
from certctl_notify import alerts
from certctl_notify.model import AlertType, Channel, JobStatus, Outcome, Severity, Status
from certctl_notify.store.listing import TOTAL_CAP

bp = Blueprint("openapi", __name__, url_prefix="/api/v1")

#: Error responses by status: (component name, when it happens).
ERRORS = {
    400: ("BadRequest", "A query parameter out of range or not one of its values, or a non-JSON body."),
    401: ("Unauthorized", "No key, an unknown key, or not a Bearer header."),
    403: ("Forbidden", "A read key on an action that needs an admin key; a console session's request without "
               "its CSRF token; a state-changing request sent by another site's page."),
    404: ("NotFound", "No such notification or requeue job."),
    409: ("Conflict", "The row or job is in the wrong state, or a bulk requeue already runs."),
    413: ("TooLarge", f"The body is larger than {MAX_BODY_BYTES} bytes."),
    422: ("Unprocessable", "A field of the body is invalid; the message names it."),
    500: ("ServerError", "The server failed; the message has no internals, the log has the request id."),
    503: ("DatabaseUnavailable", "The database cannot be reached; try again after the Retry-After seconds."),
}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    """3.1 style: the same schema with ``null`` added to its type (and to its enum)."""
    extra = {"enum": [*schema["enum"], None]} if "enum" in schema else {}
    return {**schema, "type": [schema["type"], "null"], **extra}


def obj(properties: dict, *, optional: tuple[str, ...] = (), **extra) -> dict:
    """A closed object: every property is required unless named in ``optional``."""
    required = [name for name in properties if name not in optional]
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False,
            **extra}


STR = {"type": "string"}
INT = {"type": "integer", "minimum": 0}
TIME = {"type": "string", "format": "date-time"}


def enum(cls) -> dict:
    return {"type": "string", "enum": [m.value for m in cls]}


def text(limit: int, **extra) -> dict:
    return {"type": "string", "maxLength": limit, **extra}


def notification_properties() -> dict:
    return {
        "id": STR, "type": enum(AlertType), "certificate_id": nullable(STR), "channel": enum(Channel),
        "recipient": STR, "subject": nullable(STR), "message": STR, "severity": enum(Severity),
        "status": enum(Status), "retry_count": {**INT, "description": "failed attempts so far"},
        "next_retry_at": nullable(TIME), "last_error": nullable(STR), "sent_at": nullable(TIME),
        "created_at": TIME, "updated_at": TIME, "dedupe_key": nullable(STR),
        "max_attempts": {**INT, "description": "the attempt budget (CERTCTL_NOTIFICATION_MAX_ATTEMPTS)"},
    }


def page_of(item: dict, **more) -> dict:
    one_up, total = {"type": "integer", "minimum": 1}, {**INT, "description": "true filtered count"}
    return obj({"data": {"type": "array", "items": item}, "total": total, "page": one_up, "per_page": one_up,
                **more})


def enqueue_request() -> dict:
    fields = {
        "type": enum(AlertType), "channel": enum(Channel),
        "channels": {"type": "array", "items": enum(Channel), "minItems": 1, "maxItems": len(Channel)},
        "recipient": nullable(text(alerts.MAX_RECIPIENT_CHARS, description="an e-mail address for Email")),
        "subject": nullable(text(alerts.MAX_SUBJECT_CHARS)),
        "message": text(alerts.MAX_MESSAGE_CHARS, minLength=1, pattern=r"\S"),
        "severity": nullable(enum(Severity)),
        "certificate_id": nullable(text(alerts.MAX_KEY_CHARS)),
        "dedupe_key": nullable(text(alerts.MAX_KEY_CHARS, description="a repeat returns the existing row")),
    }
    optional = tuple(name for name in fields if name not in ("type", "message"))
    one_of = [{"required": ["channel"]}, {"required": ["channels"]}]
    return {**obj(fields, optional=optional), "oneOf": one_of}


def bulk_requeue_request() -> dict:
    dead_or_failed = {"type": "string", "enum": ["dead", "failed"]}
    fields = {
        "status": {"oneOf": [dead_or_failed, {"type": "array", "items": dead_or_failed, "minItems": 1}],
                   "default": "dead"},
        "channel": nullable(enum(Channel)), "type": nullable(enum(AlertType)),
        "certificate_id": nullable(text(500)), "q": nullable(text(500)),
        "created_after": nullable(TIME), "created_before": nullable(TIME),
        "ids": {"type": "array", "items": STR, "maxItems": MAX_IDS},
        "dry_run": {"type": "boolean", "default": False},
    }
    return obj(fields, optional=tuple(fields))


def workers_schema() -> dict:
    """The Workers view (api/inspector.py): null where a worker did not answer that question in time."""
    count, number = nullable(INT), {"type": "number", "minimum": 0}
    task = obj({"task_id": nullable(STR), "task": nullable(STR), "notification_id": nullable(STR),
                "attempt": nullable({"type": "integer", "minimum": 1}), "runtime_seconds": nullable(number),
                "worker_pid": nullable({"type": "integer"})})
    worker = obj({"name": STR, "online": {"type": "boolean"}, "pid": nullable({"type": "integer"}),
                  "uptime_seconds": count, "pool": obj({"kind": nullable(STR), "size": count}),
                  "processed": {**INT, "description": "tasks started since the worker began, active ones included"},
                  "active": nullable({"type": "array", "items": task}),
                  "reserved": count, "scheduled": {**count, "description": "held for a later ETA (retries)"}})
    return obj({"status": {"enum": ["ok", "unavailable"]}, "reason": nullable(STR), "checked_at": TIME,
                "timeout_seconds": number, "workers": {"type": "array", "items": worker},
                "queues": {"type": ["object", "null"], "additionalProperties": INT,
                           "description": "messages waiting per queue (Redis brokers only)"}})


def schemas() -> dict:
    """components/schemas: every request and response body."""
    job_status, number = enum(JobStatus), {"type": "number"}
    return {
        "Error": obj({"error": {**STR, "description": "short code, e.g. not_found"}, "message": STR,
                      "request_id": {**STR, "description": "echoed X-Request-ID, or a generated one"}}),
        "Notification": obj(notification_properties()),
        "NotificationDetail": obj({**notification_properties(),
                                   "attempts": {"type": "array", "items": ref("Attempt")}}),
        "NotificationPage": page_of(
            ref("Notification"),
            total={**INT, "description": "the filtered count; a lower bound when total_exact is false (the "
                                         f"filter matched more than {TOTAL_CAP:,} rows: show it as "
                                         f"\"{TOTAL_CAP:,}+\")"},
            total_exact={"type": "boolean", "description": "false: total is a lower bound, not the count"},
            as_of={**TIME, "description": "pass back on later pages: rows created after it are left out"},
            next_cursor={**nullable(STR), "description": "pass as cursor for the next page (keyset); null on "
                                                         "the last page"}),
        "Attempt": obj({
            "attempt": {"type": "integer", "minimum": 1}, "started_at": TIME, "finished_at": nullable(TIME),
            "outcome": nullable(enum(Outcome)),
            "error_class": nullable({"type": "string", "enum": ["transient", "permanent"]}),
            "error": nullable(STR), "status_code": nullable({"type": "integer"}),
            "duration_ms": nullable({"type": "integer"}), "worker": nullable(STR), "task_id": nullable(STR)}),
        "AttemptList": obj({"data": {"type": "array", "items": ref("Attempt")}}),
        "EnqueueRequest": enqueue_request(),
        "Enqueued": obj({"data": {"type": "array", "items": ref("Notification")},
                         "created": {"type": "array", "items": {"type": "boolean"},
                                     "description": "false where a repeated dedupe_key found the row"}}),
        "Acted": obj({"status": {"type": "string", "enum": ["requeued", "marked_as_read"]}, "id": STR}),
        "BulkRequeueRequest": bulk_requeue_request(),
        "BulkRequeueDryRun": obj({"dry_run": {"const": True}, "matched": INT}),
        "BulkRequeueStarted": obj({"job_id": STR, "status": job_status, "matched": INT,
                                   "rate_per_second": number}),
        "RequeueJob": obj({"id": STR, "status": job_status, "matched": INT, "requeued": INT, "skipped": INT,
                           "rate_per_second": number, "filter": {"type": "object"}, "actor": STR,
                           "created_at": TIME, "updated_at": TIME, "finished_at": nullable(TIME)}),
        "Stats": obj({**{f"notifications_{s.value}": INT for s in Status}, "notifications_total": INT,
                      "oldest_pending_seconds": {**number, "minimum": 0}, "retries_due": INT}),
        "AuditEntry": obj({"at": TIME, "actor": {**STR, "description": "the API key's name"},
                           "action": {**STR, "description": "enqueue, requeue, bulk_requeue, mark_read, …"},
                           "target": STR, "detail": {"type": ["object", "null"]},
                           "request_id": nullable(STR)}),
        "AuditPage": page_of(ref("AuditEntry")),
        "Workers": workers_schema(),
        "Health": obj({"status": {"const": "ok"}}),
        "Readiness": obj({"status": {"enum": ["ready", "unavailable"]}, "database": STR, "broker": STR}),
        "OpenApiDocument": {"type": "object", "required": ["openapi", "info", "paths"]},
    }


def query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def path_param(name: str) -> dict:
    return {"name": name, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}


def paging() -> list[dict]:
    return [
        query("page", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
              "1-based; out of range → 400"),
        query("per_page", {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": 50},
              "out of range → 400, never clamped"),
    ]


def operation(summary: str, scope: str | None, ok: dict, errors: tuple[int, ...] = (), *, params=(),
              body: str | None = None) -> dict:
    """One operation; ``ok`` maps success codes to schema names, ``errors`` adds the envelope codes."""
    codes = {401, *errors, 500} if scope else {*errors, 500}
    if scope == "admin":
        codes.add(403)
    needs = {"read": "Needs a read or an admin key.", "admin": "Needs an admin key.", None: "Needs no key."}
    op = {"summary": summary, "x-scope": scope or "none", "description": needs[scope],
          "responses": {
              **{str(code): {"description": HTTPStatus(code).phrase,
                             "content": {"application/json": {"schema": ref(name)}}}
                 for code, name in ok.items()},
              **{str(code): {"$ref": f"#/components/responses/{ERRORS[code][0]}"} for code in sorted(codes)},
          }}
    if scope is None:
        op["security"] = []
    if params:
        op["parameters"] = list(params)
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref(body)}}}
    return op


def paths() -> dict:
    """Every route the app serves, one row each."""
    n, job = "/api/v1/notifications", "/api/v1/requeue-jobs/{job_id}"
    nid, jid = [path_param("notification_id")], [path_param("job_id")]
    filters = [query("status", enum(Status), "unknown value → 400"), query("channel", enum(Channel), ""),
               query("type", enum(AlertType), ""), query("certificate_id", text(500), ""),
               query("q", text(500), "case-insensitive substring of last_error"),
               query("as_of", TIME, "stable paging: only rows created at or before it (default: now)"),
               query("cursor", STR, "the next_cursor of the previous page: keyset paging for deep pages "
                                    "(not with page)")]
    table = [  # path, method, summary, scope, {success status: schema}, error statuses, parameters, body
        ("/healthz", "get", "The process answers", None, {200: "Health"}, (), (), None),
        ("/readyz", "get", "The database and the broker answer (503 says what is down)", None,
         {200: "Readiness", 503: "Readiness"}, (), (), None),
        (n, "get", "A filtered page, newest first (created_at DESC, id DESC)", "read",
         {200: "NotificationPage"}, (400, 503), [*paging(), *filters], None),
        (n, "post", "Enqueue an alert: one pending row per channel", "admin", {202: "Enqueued"},
         (400, 413, 422, 503), (), "EnqueueRequest"),
        (n + "/{notification_id}", "get", "One notification with its attempts", "read",
         {200: "NotificationDetail"}, (404, 503), nid, None),
        (n + "/{notification_id}/attempts", "get", "The attempt history", "read", {200: "AttemptList"},
         (404, 503), nid, None),
        (n + "/{notification_id}/requeue", "post", "Requeue a dead or failed row, dispatched at once",
         "admin", {200: "Acted"}, (404, 409, 503), nid, None),
        (n + "/{notification_id}/read", "post", "Mark a sent or dead row read", "admin", {200: "Acted"},
         (404, 409, 503), nid, None),
        (n + "/requeue", "post", "Bulk requeue by filter at a bounded rate (or dry-run it)", "admin",
         {200: "BulkRequeueDryRun", 202: "BulkRequeueStarted"}, (400, 409, 413, 422, 503), (),
         "BulkRequeueRequest"),
        (job, "get", "A bulk requeue's progress", "read", {200: "RequeueJob"}, (404, 503), jid, None),
        (job + "/cancel", "post", "Stop a running bulk requeue", "admin", {200: "RequeueJob"}, (404, 409, 503),
         jid, None),
        ("/api/v1/stats/summary", "get", "Counts per status, oldest pending age, retries due", "read",
         {200: "Stats"}, (503,), (), None),
        ("/api/v1/workers", "get", "Workers, their tasks and the queue depths (Flower-style)", "read",
         {200: "Workers"}, (), (), None),
        ("/api/v1/audit", "get", "Admin actions, newest first", "admin", {200: "AuditPage"}, (400, 503), paging(),
         None),
        ("/api/v1/openapi.json", "get", "This document", None, {200: "OpenApiDocument"}, (), (), None),
    ]
    result: dict = {}
    for path, method, summary, scope, ok, errors, params, body in table:
        result.setdefault(path, {})[method] = operation(summary, scope, ok, errors, params=params, body=body)
    result["/metrics"] = {"get": metrics_operation()}
    return result


def metrics_operation() -> dict:
    """``GET /metrics`` answers Prometheus text, not JSON, and needs a key only with CERTCTL_METRICS_AUTH."""
    return {
        "summary": "Prometheus metrics: database and queue gauges, counters of every API and worker process",
        "x-scope": "none", "security": [{}, {"bearerAuth": []}],
        "description": "Needs no key, unless CERTCTL_METRICS_AUTH=true: then a read or an admin key.",
        "responses": {
            "200": {"description": "Prometheus text exposition format 0.0.4",
                    "content": {"text/plain": {"schema": {"type": "string"}}}},
            **{str(code): {"$ref": f"#/components/responses/{ERRORS[code][0]}"} for code in (401, 500)},
        },
    }


def document() -> dict:
    """The whole OpenAPI 3.1 document."""
    scopes = ("Keys come from CERTCTL_API_KEYS (name:key:scope). A read key may list and get notifications, "
              "their attempts, stats and requeue jobs; an admin key may also enqueue, requeue, mark read, "
              "bulk requeue, cancel jobs and read the audit log. Each operation's x-scope names its scope.")
    errors = {name: {"description": when, "content": {"application/json": {"schema": ref("Error")}}}
              for name, when in ERRORS.values()}
    errors[ERRORS[503][0]]["headers"] = {"Retry-After": {"description": "seconds to wait before trying again",
                                                         "schema": {"type": "integer", "minimum": 1}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "certctl-notify", "version": "1",
                 "description": "Certificate alert delivery with capped retries and a dead-letter queue. "
                                'Every error is {"error", "message", "request_id"}.'},
        "security": [{"bearerAuth": []}],
        "paths": paths(),
        "components": {
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer", "description": scopes}},
            "schemas": schemas(),
            "responses": errors,
        },
    }


@bp.get("/openapi.json")
def openapi_json():
    """This API's OpenAPI 3.1 document. Request: ``GET /api/v1/openapi.json``; response 200: the document."""
    return jsonify(document())
