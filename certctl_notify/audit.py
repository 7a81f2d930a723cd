"""Who acted, and the audit entry written in the same transaction as the action."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

from certctl_notify import store


@dataclass(frozen=True)
class Actor:
    """Who acts, for the audit log: an API key's name, ``cli:<user>`` or ``broker``."""

    name: str
    request_id: str | None = None


def record_audit(
    session: Connection, actor: Actor | None, action: str, target: str, at: datetime, detail=None
) -> None:
    """Write an audit row in the caller's transaction, so the action and its record commit together."""
    if actor is not None:
        store.add_audit(session, at=at, actor=actor.name, action=action, target=target, detail=detail,
                        request_id=actor.request_id)
