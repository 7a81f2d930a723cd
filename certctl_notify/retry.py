"""The retry policy: a small pure object, no clock and no broker."""

from __future__ import annotations

import random
from dataclasses import dataclass

from certctl_notify.settings import RetrySettings


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff: wait ``min(base · 2^(n-1), cap)`` after the n-th failure."""

    base_seconds: float
    cap_seconds: float
    max_attempts: int
    jitter: bool = False
    hold_max_seconds: float = 0.0  #: longest wait a worker holds as a countdown (see `held`)

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        return cls(settings.base_seconds, settings.cap_seconds, settings.max_attempts, settings.jitter,
                   settings.hold_max_seconds)

    def held(self, delay: float) -> bool:
        """True when a wait of ``delay`` seconds is held by the worker as a countdown message; a longer
        wait is kept in PostgreSQL and released when due, so no worker holds an outage's retries."""
        return delay <= self.hold_max_seconds

    def exhausted(self, failures: int) -> bool:
        """True when ``failures`` failed attempts have used the whole budget."""
        return failures >= self.max_attempts

    def delay_for(self, failures: int, retry_after: float | None = None, *, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th failed attempt.

        A peer's ``Retry-After`` lengthens the wait but never past the cap; jitter (when on) draws
        uniformly from [wait/2, wait] so a fleet of retries does not arrive in lockstep.

        Raises:
            ValueError: when ``failures`` is below 1.
        """
        if failures < 1:
            raise ValueError("delay_for counts failures from 1")
        delay = min(self.base_seconds * 2 ** (failures - 1), self.cap_seconds)
        if self.jitter:
            delay = (rng or random).uniform(delay / 2, delay)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.cap_seconds)
