"""The served OpenAPI document is valid 3.1, covers every route, and real responses conform to it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
import redis
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from api.app import create_app
from certctl_notify import store
from certctl_notify.publish import DELIVERY_QUEUE
from tests.api.conftest import ADMIN, READ

METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
def document(http):
    response = http.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.json


def documented_path(rule: str) -> str:
    """``/api/v1/notifications/<notification_id>`` → ``/api/v1/notifications/{notification_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


class Contract:
    """Checks one real response against the schema the document gives its operation and status."""

    def __init__(self, app, document: dict):
        self.adapter = app.url_map.bind("localhost")
        self.document = document
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self.registry = Registry().with_resource("urn:openapi", resource)
        self.seen: set[tuple[str, str]] = set()

    def check(self, method: str, url: str, response) -> None:
        rule, _ = self.adapter.match(url.split("?")[0], method=method.upper(), return_rule=True)
        path = documented_path(rule.rule)
        self.seen.add((path, method.lower()))
        responses = self.document["paths"][path][method.lower()]["responses"]
        where = f"{method} {url} → {response.status_code} {response.get_data(as_text=True)[:300]}"
        assert str(response.status_code) in responses, f"undocumented status: {where}"
        documented = responses[str(response.status_code)]
        if "$ref" in documented:
            documented = self.document["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
        if "application/json" not in documented["content"]:  # /metrics: Prometheus text
            assert response.mimetype in documented["content"], f"undocumented content type: {where}"
            return
        name = documented["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        schema = {"$ref": f"urn:openapi#/components/schemas/{name}"}
        validator = Draft202012Validator(schema, registry=self.registry,
                                         format_checker=Draft202012Validator.FORMAT_CHECKER)
        errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
                  for e in validator.iter_errors(response.json)]
        assert not errors, f"{where}\n" + "\n".join(errors)


def test_the_document_is_valid_openapi_3_1(document):
    assert document["openapi"].startswith("3.1")
    OpenAPIV31SpecValidator(document).validate()


def test_every_route_the_app_serves_is_documented_and_nothing_else(app, document):
    # Given the routes Flask really serves (HEAD and OPTIONS are implied by GET and by Flask itself), less
    # the console's HTML pages, which are not API (the README documents them)
    served = {(documented_path(rule.rule), method.lower())
              for rule in app.url_map.iter_rules()
              if rule.endpoint != "static" and rule.endpoint != "root" and not rule.endpoint.startswith("console.")
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    documented = {(path, method) for path, item in document["paths"].items()
                  for method in item if method in METHODS}
    # Then an endpoint added without documentation, or documentation of a removed one, fails here
    assert served - documented == set(), "served but not documented"
    assert documented - served == set(), "documented but not served"


def test_the_document_needs_no_key_and_names_the_scopes(http, document):
    ops = {(p, m): op for p, item in document["paths"].items() for m, op in item.items()}
    assert ops[("/api/v1/openapi.json", "get")]["security"] == ops[("/healthz", "get")]["security"] == []
    assert ops[("/api/v1/notifications", "post")]["x-scope"] == "admin"
    assert ops[("/api/v1/notifications", "get")]["x-scope"] == "read"
    assert "403" in ops[("/api/v1/notifications/{notification_id}/read", "post")]["responses"]
    params = {p["name"]: p["schema"] for p in ops[("/api/v1/notifications", "get")]["parameters"]}
    assert params["per_page"]["minimum"] == 1 and params["per_page"]["maximum"] == 500
    assert params["status"]["enum"] == ["pending", "sent", "failed", "dead", "read"]


def test_real_responses_of_every_endpoint_conform_to_the_document(app, http, document, make_row):
    # Given a row in each interesting state
    dead, sent, pending = make_row("dead", retry_count=5, last_error="HTTP 503"), make_row(
        "sent", sent_at=datetime.now(UTC)), make_row("pending")
    contract = Contract(app, document)
    alert = {"type": "ExpirationWarning", "channel": "Webhook", "message": "expires in 7 days"}
    n = "/api/v1/notifications"
    steps = [
        ("get", "/healthz", {}, None, 200),
        ("get", "/readyz", {}, None, 200),
        ("get", "/api/v1/openapi.json", {}, None, 200),
        ("get", f"{n}?status=dead&per_page=5", READ, None, 200),
        ("get", f"{n}?per_page=0", READ, None, 400),
        ("get", f"{n}?status=lost", READ, None, 400),
        ("get", n, {}, None, 401),
        ("post", n, ADMIN, alert, 202),
        ("post", n, ADMIN, {**alert, "channels": ["Slack", "Teams"], "channel": None}, 422),
        ("post", n, ADMIN, "not json", 400),
        ("post", n, ADMIN, {**alert, "message": "x" * (1024 * 1024)}, 413),
        ("post", n, READ, alert, 403),
        ("get", f"{n}/{dead.id}", READ, None, 200),
        ("get", f"{n}/notif_nope", READ, None, 404),
        ("get", f"{n}/{dead.id}/attempts", READ, None, 200),
        ("get", f"{n}/notif_nope/attempts", READ, None, 404),
        ("post", f"{n}/{sent.id}/read", ADMIN, None, 200),
        ("post", f"{n}/{pending.id}/read", ADMIN, None, 409),
        ("post", f"{n}/notif_nope/read", ADMIN, None, 404),
        ("post", f"{n}/{dead.id}/read", READ, None, 403),
        ("post", f"{n}/{dead.id}/requeue", ADMIN, None, 200),
        ("post", f"{n}/{dead.id}/requeue", ADMIN, None, 409),
        ("post", f"{n}/notif_nope/requeue", ADMIN, None, 404),
        ("post", f"{n}/requeue", ADMIN, {"dry_run": True}, 200),
        ("post", f"{n}/requeue", ADMIN, {"status": "dead", "channel": "Webhook"}, 202),
        ("post", f"{n}/requeue", ADMIN, {"status": "dead"}, 409),
        ("post", f"{n}/requeue", ADMIN, {"colour": "red"}, 422),
        ("post", f"{n}/requeue", ADMIN, "[1]", 400),
        ("get", "/api/v1/requeue-jobs/job_nope", READ, None, 404),
        ("post", "/api/v1/requeue-jobs/job_nope/cancel", ADMIN, None, 404),
        ("get", "/api/v1/stats/summary", READ, None, 200),
        ("get", "/api/v1/workers", READ, None, 200),
        ("get", "/api/v1/audit?per_page=3", ADMIN, None, 200),
        ("get", "/api/v1/audit?page=0", ADMIN, None, 400),
        ("get", "/api/v1/audit", READ, None, 403),
    ]
    job_id = None
    for method, url, headers, body, expected in steps:
        data = body if isinstance(body, str) or body is None else json.dumps(body)
        response = http.open(url, method=method.upper(), headers=headers, data=data,
                             content_type="application/json")
        assert response.status_code == expected, f"{method} {url}: {response.status_code} {response.json}"
        contract.check(method, url, response)
        job_id = response.json.get("job_id", job_id)
    # And the job endpoints, on the job the bulk requeue started
    for method, url, expected in [("get", f"/api/v1/requeue-jobs/{job_id}", 200),
                                  ("post", f"/api/v1/requeue-jobs/{job_id}/cancel", 200),
                                  ("post", f"/api/v1/requeue-jobs/{job_id}/cancel", 409)]:
        response = http.open(url, method=method.upper(), headers=ADMIN)
        assert response.status_code == expected, f"{method} {url}: {response.status_code} {response.json}"
        contract.check(method, url, response)
    response = http.get("/metrics")
    assert response.status_code == 200
    contract.check("get", "/metrics", response)
    # Then every documented operation was exercised here
    documented = {(p, m) for p, item in document["paths"].items() for m in item if m in METHODS}
    assert documented - contract.seen == set()


def test_a_server_error_is_the_documented_envelope_without_internals(app, http, document, monkeypatch):
    # Given the store fails with an internal error
    def broken(*args, **kwargs):
        raise RuntimeError("password=hunter2 in the DSN")

    monkeypatch.setattr(store, "summary", broken)
    # When a client asks for the stats
    response = http.get("/api/v1/stats/summary", headers=READ)
    # Then it gets a 500 in the documented envelope, with nothing of the failure's text
    assert response.status_code == 500 and "hunter2" not in response.get_data(as_text=True)
    Contract(app, document).check("get", "/api/v1/stats/summary", response)


def test_readiness_with_a_dead_broker_is_a_documented_503(make_env, sessions):
    from certctl_notify.environment import load_settings

    app = create_app(load_settings(make_env(CERTCTL_BROKER_URL="redis://127.0.0.1:1/0")))
    document = app.test_client().get("/api/v1/openapi.json").json
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    Contract(app, document).check("get", "/readyz", response)


def test_an_api_outliving_a_database_outage_answers_a_documented_503_then_recovers(
    make_env, sessions, broker_url, database_proxy
):
    from certctl_notify.environment import load_settings

    # Given an API process that has served a request through its connection pool
    proxy, proxied_url = database_proxy
    app = create_app(load_settings(make_env(CERTCTL_DATABASE_URL=proxied_url)))
    http = app.test_client()
    contract = Contract(app, http.get("/api/v1/openapi.json").json)
    body = {"type": "ExpirationWarning", "channel": "Webhook", "message": "www expires", "dedupe_key": "outage-1"}
    assert http.get("/api/v1/notifications", headers=READ).status_code == 200
    # When the database becomes unreachable
    proxy.cut()
    # Then reads and enqueues answer 503 with Retry-After (something to retry, not a bug), and nothing is queued
    url = "/api/v1/notifications"
    for method, kwargs in (("get", {}), ("post", {"json": body})):
        response = getattr(http, method)(url, headers=ADMIN, **kwargs)
        assert (response.status_code, response.json["error"]) == (503, "database_unavailable")
        assert response.headers["Retry-After"] == "5"
        contract.check(method, url, response)
    assert http.get("/readyz").json["database"].startswith("unavailable")
    assert redis.Redis.from_url(broker_url).llen(DELIVERY_QUEUE) == 0
    # And once it is back the same process takes the retried enqueue: one row, one delivery task
    proxy.restore()
    assert http.post("/api/v1/notifications", headers=ADMIN, json=body).status_code == 202
    assert redis.Redis.from_url(broker_url).llen(DELIVERY_QUEUE) == 1
    with sessions.begin() as s:
        assert store.get_by_dedupe_key(s, "outage-1", "Webhook").status == "pending"
