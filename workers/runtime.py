"""Per-process resources of a worker: built lazily, so nothing connects at import or crosses a fork."""

from __future__ import annotations

import socket

from certctl_notify.channels import build_channels
from certctl_notify.db import make_sessions
from certctl_notify.delivery import Delivery
from certctl_notify.metrics import Metrics
from certctl_notify.retry import RetryPolicy
from certctl_notify.settings import Settings
from workers.config import claim_patience, record_patience


class Runtime:
    """Settings plus the engine, session factory and channels of the current process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.policy = RetryPolicy.from_settings(settings.retry)
        self.hostname = socket.gethostname()
        self._sessions = None
        self._delivery = None
        self._metrics = None

    @property
    def metrics(self) -> Metrics:
        """This process's counters, created on first use (in a pool process, after the fork)."""
        if self._metrics is None:
            self._metrics = Metrics()
        return self._metrics

    @property
    def sessions(self):
        if self._sessions is None:
            self._sessions = make_sessions(self.settings.database_url)
        return self._sessions

    @property
    def delivery(self) -> Delivery:
        if self._delivery is None:
            self._delivery = Delivery(
                self.sessions, build_channels(self.settings), self.policy,
                lease_seconds=self.settings.worker.lease_seconds, metrics=self.metrics,
                claim_patience_seconds=claim_patience(self.settings),
                record_patience_seconds=record_patience(self.settings),
            )
        return self._delivery

    def after_fork(self) -> None:
        """In a new pool process: drop the parent's pooled connections without closing them (the
        parent still owns the sockets) and build fresh channels (their HTTP pools too)."""
        if self._sessions is not None:
            self._sessions.dispose(close=False)
        self._delivery = None
