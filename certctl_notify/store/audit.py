"""The audit log: who did what to which notification or job, and when."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Row, func, select

from certctl_notify.model import audit_log


def add_audit(session: Connection, *, at: datetime, actor: str, action: str, target: str, detail: dict | None = None,
              request_id: str | None = None) -> None:
    session.execute(audit_log.insert(), {"at": at, "actor": actor, "action": action, "target": target,
                                                "detail": detail, "request_id": request_id})


def list_audit(session: Connection, *, page: int, per_page: int) -> tuple[int, Sequence[Row]]:
    total = session.execute(select(func.count()).select_from(audit_log)).scalar_one()
    rows = session.execute(select(audit_log).order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
                           .limit(per_page).offset((page - 1) * per_page)).all()
    return total, rows
