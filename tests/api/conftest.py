"""The API on this test's database and broker, through Flask's test client."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from api.app import create_app
from certctl_notify import store

ADMIN = {"Authorization": "Bearer admin-key"}
READ = {"Authorization": "Bearer read-key"}


@pytest.fixture
def app(settings, sessions, broker_url):
    """The app (the `sessions` fixture has emptied every table, operator ones included)."""
    return create_app(settings)


@pytest.fixture
def http(app):
    return app.test_client()


@pytest.fixture
def make_row(sessions):
    """``make_row("dead", retry_count=5)`` inserts a notification in that state and returns it."""

    def make(status: str, **values):
        now = datetime.now(UTC)
        row = {"id": f"notif_{uuid.uuid4().hex}", "type": "RenewalFailure", "channel": "Webhook",
               "recipient": "", "message": "renewal failed", "status": status, "retry_count": 0,
               "created_at": now, "updated_at": now, "dispatched_at": now, **values}
        with sessions.begin() as s:
            return store.insert_notification(s, row)

    return make
