"""``GET /metrics``: the service's one Prometheus scrape target (see `certctl_notify.metrics`)."""

from __future__ import annotations

from flask import Blueprint, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.auth import require
from api.deps import deps

bp = Blueprint("metrics", __name__)


def _render() -> Response:
    return Response(generate_latest(deps().scrape), content_type=CONTENT_TYPE_LATEST)


_render_for_read_key = require("read")(_render)


@bp.get("/metrics")
def metrics():
    """Prometheus text: database and queue gauges, and the counters of every API and worker process.

    Open, unless ``CERTCTL_METRICS_AUTH=true``: then it needs a read key like ``/api/v1``.
    Request: ``GET /metrics``
    Response 200 (``text/plain; version=0.0.4``): ``certctl_notifications{status="dead"} 3.0`` …
    ``certctl_notification_attempts_total{channel="Webhook",outcome="sent"} 120.0`` …
    """
    if deps().settings.api.metrics_auth:
        return _render_for_read_key()
    return _render()
