"""Logging: one line per event, text or JSON, with the task and notification ids of the current task."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

_context: contextvars.ContextVar[dict | None] = contextvars.ContextVar("certctl_log_context", default=None)

#: Attributes every LogRecord has; anything else passed through ``extra=`` goes into JSON lines.
_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def bind(**values) -> None:
    """Attach values (task_id, notification_id) to every log line of the current task."""
    _context.set({**(_context.get() or {}), **values})


def clear() -> None:
    _context.set({})


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        line.update({k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure_logging(log_format: str = "text", level: str = "INFO") -> None:
    """Install one stderr handler on the root logger (replacing any earlier one of ours)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_ContextFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for existing in [h for h in root.handlers if getattr(h, "_certctl", False)]:
        root.removeHandler(existing)
    handler._certctl = True
    root.addHandler(handler)
    root.setLevel(level)
    # httpx logs every request's full URL at INFO, and webhook URLs carry their tokens in the path.
    logging.getLogger("httpx").setLevel(logging.WARNING)
