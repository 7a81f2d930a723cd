"""Schemathesis against the served OpenAPI document, through the Flask app on the real database and Redis.

Every operation gets generated requests (valid and invalid ones) with the admin key: no answer may be a
5xx, and every answer's status and body must be ones the document gives for that operation.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from api.openapi import document
from tests.api.conftest import ADMIN

BULK = "/api/v1/notifications/requeue"
#: Valid requests, and requests the document says are invalid (which must get a documented 4xx).
GENERATION_MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
#: Every documented operation, read from the document itself (building it touches no service).
OPERATIONS = [(method.upper(), path) for path, item in document()["paths"].items() for method in item]


def _examples(method: str, path: str) -> int:
    """25 generated requests; an operation that takes no input gets the same request each time, and
    GET /workers waits for workers' replies on each, so a few of those say as much."""
    spec = document()["paths"][path][method.lower()]
    takes_input = spec.get("parameters") or spec.get("requestBody") or "{" in path
    return 25 if takes_input else 3


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


# schemathesis.pytest.from_fixture() does not run on pytest 9 (it reads Function._nodeid), so each
# operation is its own pytest case and Hypothesis drives the operation's strategies directly.
@pytest.mark.parametrize("method, path", OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_no_server_errors_and_every_answer_matches_the_document(api_schema, method, path):
    operation = api_schema[path][method]
    cases = st.one_of(*(operation.as_strategy(mode) for mode in GENERATION_MODES))

    @given(case=cases)
    @hypothesis_settings(max_examples=_examples(method, path), deadline=None, database=None,
                         suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    def check(case):
        case.call_and_validate(headers=ADMIN, checks=CHECKS)

    check()


@pytest.mark.parametrize("method, url, body, expected", [
    ("GET", "/api/v1/notifications?as_of=0586-04-04T22:55:29%2B23:00", None, 200),  # PostgreSQL caps offsets
    ("GET", "/api/v1/notifications?as_of=0001-01-01T00:00:00%2B05:00", None, 400),  # before year 1 in UTC
    ("GET", "/api/v1/notifications?page=100000000000000000000", None, 400),  # past a bigint OFFSET
    ("GET", "/api/v1/audit?page=100000000000000000000", None, 400),
    ("GET", "/api/v1/notifications?q=a%00b", None, 400),  # PostgreSQL text cannot hold NUL
    ("GET", "/api/v1/notifications/a%00b", None, 404),
    ("POST", "/api/v1/requeue-jobs/a%00b/cancel", None, 404),
    ("POST", "/api/v1/notifications", {"type": "Revocation", "channel": "Slack", "message": "a\x00"}, 422),
    ("POST", BULK, {"q": "\x00", "dry_run": True}, 422),
    ("POST", BULK, {"ids": ["a\x00"], "dry_run": True}, 422),
    ("POST", BULK, {"created_after": "2020-01-01T00:00:00+20:00", "dry_run": True}, 200),
])
def test_inputs_that_once_made_a_server_error_get_a_clear_answer(api_schema, method, url, body, expected):
    response = api_schema.app.test_client().open(url, method=method, json=body, headers=ADMIN)
    assert response.status_code == expected, response.json
