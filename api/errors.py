"""One error envelope everywhere: ``{"error", "message", "request_id"}`` with the right status."""

from __future__ import annotations

import logging
import uuid

from flask import Flask, g, jsonify, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from certctl_notify.db import is_unavailable

log = logging.getLogger("certctl_notify.api")

#: Seconds a client is asked to wait before trying again while the database is unreachable.
RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """Raised by views; rendered as the envelope with ``status``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def envelope(status: int, code: str, message: str):
    response = jsonify({"error": code, "message": message, "request_id": g.get("request_id", "")})
    response.status_code = status
    return response


def init_app(app: Flask) -> None:
    @app.before_request
    def _request_id():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if 0 < len(incoming) <= 128 and incoming.isprintable() else uuid.uuid4().hex

    @app.after_request
    def _echo_request_id(response):
        response.headers["X-Request-ID"] = g.get("request_id", "")
        return response

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        return envelope(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return envelope(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(DBAPIError)
    @app.errorhandler(PoolTimeout)  # no connection free in the pool: no DBAPIError
    def _database_error(exc: Exception):
        # Unreachable, restarting or overloaded: a state the client should retry (a dedupe_key makes
        # the retry of an enqueue safe), not a bug to report. Any other database error is a 500.
        if not is_unavailable(exc):
            return _unhandled(exc)
        log.warning("database unavailable in %s %s (request %s): %s", request.method, request.path,
                    g.get("request_id"), str(exc).splitlines()[0])
        response = envelope(503, "database_unavailable", "the database cannot be reached; try again shortly")
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response

    @app.errorhandler(Exception)
    def _unhandled(exc: Exception):
        log.exception("unhandled error in %s %s (request %s)", request.method, request.path, g.get("request_id"))
        return envelope(500, "internal_error", "the server failed to handle this request; see its log")
