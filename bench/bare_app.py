"""The floor for ``bench/api_latency.py``: a bare Flask app doing only what intake must do.

    gunicorn --workers 2 --bind 127.0.0.1:<port> 'bench.bare_app:create_app()'

One endpoint, ``POST /api/v1/notifications``: parse the same JSON body as the real API, build the
same pending row (same columns and values as ``Alert.rows``), ONE ``INSERT`` into
``notification_events`` through SQLAlchemy Core on ``CERTCTL_DATABASE_URL``, answer 202 with the
id. No auth, no validation beyond "a JSON object", no audit row, no broker publish, no ORM session,
no pool pre-ping: whatever the real endpoint spends beyond this is certctl-notify's own cost.

It deliberately imports nothing from the project (the table is declared here with the columns it
writes), so the baseline cannot inherit the project's overheads.
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime

from flask import Flask, jsonify, request
from sqlalchemy import Column, DateTime, Integer, MetaData, Table, Text, create_engine

metadata = MetaData()
#: The columns of ``notification_events`` that intake writes (the real table has more, all nullable
#: or defaulted).
events = Table(
    "notification_events", metadata,
    Column("id", Text, primary_key=True),
    Column("type", Text),
    Column("certificate_id", Text),
    Column("channel", Text),
    Column("recipient", Text),
    Column("subject", Text),
    Column("message", Text),
    Column("severity", Text),
    Column("status", Text),
    Column("retry_count", Integer),
    Column("dedupe_key", Text),
    Column("created_at", DateTime(timezone=True)),
    Column("updated_at", DateTime(timezone=True)),
    Column("dispatched_at", DateTime(timezone=True)),
)


def create_app() -> Flask:
    engine = create_engine(os.environ["CERTCTL_DATABASE_URL"])
    insert = events.insert()
    app = Flask(__name__)

    @app.post("/api/v1/notifications")
    def create():
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            return jsonify(error="bad_request"), 400
        now = datetime.now(UTC)
        notification_id = f"notif_{uuid.uuid4().hex}"
        row = {
            "id": notification_id,
            "type": body.get("type"),
            "certificate_id": body.get("certificate_id"),
            "channel": body.get("channel"),
            "recipient": body.get("recipient") or "",
            "subject": body.get("subject") or "Expiration warning",
            "message": body.get("message"),
            "severity": body.get("severity") or "warning",
            "status": "pending",
            "retry_count": 0,
            "dedupe_key": body.get("dedupe_key"),
            "created_at": now,
            "updated_at": now,
            "dispatched_at": now,
        }
        with engine.begin() as conn:
            conn.execute(insert, row)
        return jsonify(id=notification_id), 202

    return app
