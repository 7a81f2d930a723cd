"""One delivery attempt, independent of Celery: claim, send outside any transaction, record.

The Celery task in `workers.tasks` composes these steps and hands retries to Celery; this module
owns what each step writes so the rules are the same for every caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypeVar

from billiard.exceptions import SoftTimeLimitExceeded
from sqlalchemy import Row

from certctl_notify import store
from certctl_notify.channels.base import Channel, Notification, Sent, UnconfiguredChannel
from certctl_notify.db import Transactions, retry_while_unavailable
from certctl_notify.errors import DeliveryError, PermanentError, TransientError
from certctl_notify.metrics import NO_METRICS, Recorder
from certctl_notify.model import Channel as ChannelName
from certctl_notify.model import Outcome, utcnow
from certctl_notify.retry import RetryPolicy

log = logging.getLogger("certctl_notify.delivery")

T = TypeVar("T")


@dataclass(frozen=True)
class Attempt:
    """Who is making which attempt: the claim token ties the outcome to this execution."""

    notification_id: str
    number: int
    task_id: str | None
    worker: str
    started: float = field(default_factory=time.monotonic)  #: monotonic seconds, for the log line

    @property
    def token(self) -> str:
        return f"{self.task_id}:{self.number}"


class Delivery:
    """The steps of one attempt, each its own short transaction."""

    def __init__(
        self,
        sessions: Transactions,
        channels: Mapping[str, Channel],
        policy: RetryPolicy,
        *,
        lease_seconds: float,
        claim_patience_seconds: float = 0.0,
        record_patience_seconds: float = 0.0,
        now: Callable[[], datetime] = utcnow,
        metrics: Recorder = NO_METRICS,
    ):
        self.sessions = sessions
        #: How long after an attempt started its claim, and its outcome, may still wait for an
        #: unreachable database.
        self.claim_patience_seconds = claim_patience_seconds
        self.record_patience_seconds = record_patience_seconds
        self.metrics = metrics
        self.channels = channels
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.now = now

    def claim(self, attempt: Attempt) -> Row | None:
        """Claim the row for this attempt; None when a duplicate or stale message found nothing to do."""
        def claim() -> Row | None:
            with self.sessions.begin() as session:
                return store.claim(
                    session, attempt.notification_id, attempt=attempt.number, token=attempt.token, now=self.now(),
                    lease_seconds=self.lease_seconds, worker=attempt.worker, task_id=attempt.task_id,
                )

        # Waiting out a short outage here keeps the rest of the queue in the broker, to flow as soon as
        # the database is back; past the patience the task fails and the sweep re-dispatches the row.
        row = retry_while_unavailable(claim, f"{attempt.notification_id} attempt {attempt.number}: claim",
                                      until=attempt.started + self.claim_patience_seconds)
        if row is None:
            log.info("%s attempt %d: nothing to claim (already done, superseded or in progress elsewhere)",
                     attempt.notification_id, attempt.number)
        return row

    def send(self, row: Row, attempt: Attempt) -> Sent:
        """Send through the row's channel. Anything a channel did not classify becomes transient:
        an unknown failure gets the retry budget, then a dead row with its reason — never a success."""
        channel = self.channels.get(row.channel) or UnconfiguredChannel(row.channel, "a channel of that name")
        try:
            return channel.send(Notification.from_row(row, attempt.number))
        except DeliveryError:
            raise
        except SoftTimeLimitExceeded as exc:
            raise TransientError("attempt exceeded the task time limit") from exc
        except Exception as exc:
            raise TransientError(f"unexpected {type(exc).__name__} in channel {row.channel}") from exc

    def record_sent(self, row: Row, attempt: Attempt, sent: Sent) -> bool:
        moment = self.now()

        def record() -> tuple[Row | None, float]:
            with self.sessions.begin() as session:
                return store.record_sent(
                    session, attempt.notification_id, token=attempt.token, now=moment, attempt_id=row.attempt_id,
                    started_at=row.updated_at, status_code=sent.status_code)

        done, seconds = self._keep_recording(record, attempt, "record sent")
        self.metrics.attempt(done, Outcome.SENT, seconds)
        self._log(row, attempt, Outcome.SENT, applied=done is not None, code=sent.status_code)
        return done is not None

    def record_retry(self, row: Row, attempt: Attempt, exc: TransientError) -> float | None:
        """Write the failure and its next step in one transaction; returns the wait in seconds, or None
        when the claim was lost (the execution that owns the row now schedules the retry). A wait the
        policy does not hold (`RetryPolicy.held`) is left in the row for the release of due retries."""
        delay = self.policy.delay_for(attempt.number, exc.retry_after)
        moment = self.now()

        def record() -> tuple[float | None, Row | None]:
            with self.sessions.begin() as session:
                seconds = store.finish_attempt(
                    session, attempt.notification_id, attempt=attempt.number, task_id=attempt.task_id, now=moment,
                    outcome=Outcome.RETRY, error_class="transient", error=str(exc), status_code=exc.status_code,
                    attempt_id=row.attempt_id, started_at=row.updated_at)
                return seconds, store.mark_failed(
                    session, attempt.notification_id, token=attempt.token, failures=attempt.number,
                    next_retry_at=moment + timedelta(seconds=delay), error=str(exc), now=moment,
                    held=self.policy.held(delay))

        seconds, done = self._keep_recording(record, attempt, "record retry")
        self.metrics.attempt(done, Outcome.RETRY, seconds)
        self._log(row, attempt, Outcome.RETRY, applied=done is not None, code=exc.status_code,
                  error=str(exc), delay=delay)
        return delay if done is not None else None

    def record_dead(self, notification_id: str, attempt: Attempt, exc: DeliveryError) -> Row | None:
        """The dead letter: budget spent or a permanent error. Returns the dead row, or None when the
        claim was lost (another execution owns the row now)."""
        error_class = "permanent" if isinstance(exc, PermanentError) else "transient"
        moment = self.now()

        def record() -> tuple[float | None, Row | None]:
            with self.sessions.begin() as session:
                seconds = store.finish_attempt(
                    session, notification_id, attempt=attempt.number, task_id=attempt.task_id, now=moment,
                    outcome=Outcome.DEAD, error_class=error_class, error=str(exc), status_code=exc.status_code)
                return seconds, store.mark_dead(session, notification_id, token=attempt.token,
                                                failures=attempt.number, error=str(exc), now=moment)

        seconds, row = self._keep_recording(record, attempt, "record dead")
        self.metrics.attempt(row, Outcome.DEAD, seconds, error=exc)
        if row is not None:
            self._log(row, attempt, Outcome.DEAD, applied=True, code=exc.status_code, error=str(exc))
        else:
            log.warning("%s attempt %d: dead outcome not recorded, the claim was lost", notification_id, attempt.number)
        return row

    def _keep_recording(self, record: Callable[[], T], attempt: Attempt, step: str) -> T:
        """Write an outcome, waiting out a database that cannot be reached for as long as the attempt's
        patience allows: past it the claim lease decides (the sweep sends the attempt again)."""
        return retry_while_unavailable(record, f"{attempt.notification_id} attempt {attempt.number}: {step}",
                                       until=attempt.started + self.record_patience_seconds)

    def _log(self, row: Row, attempt: Attempt, outcome: Outcome, *, applied: bool, code=None, error=None,
             delay=None) -> None:
        if not applied:
            log.warning("%s attempt %d/%d via %s: %s, but the claim was lost before it was recorded",
                        row.id, attempt.number, self.policy.max_attempts, row.channel, outcome)
            return
        # The duration is the attempt's own; the wait before the next attempt comes last, with its number.
        happened = {Outcome.SENT: "sent", Outcome.RETRY: "failed", Outcome.DEAD: "dead"}[outcome]
        protocol = "SMTP" if row.channel == ChannelName.EMAIL else "HTTP"
        if outcome is Outcome.SENT:
            next_step = ""
        elif delay is not None:
            next_step = f"; attempt {attempt.number + 1}/{self.policy.max_attempts} in {delay:.3g}s"
        else:
            next_step = "; no retry"
        log.info(
            "%s attempt %d/%d via %s: %s after %.0f ms%s%s%s",
            row.id, attempt.number, self.policy.max_attempts, row.channel, happened,
            (time.monotonic() - attempt.started) * 1000,
            f" ({protocol} {code})" if code is not None else "", f": {error}" if error else "", next_step,
            extra={"notification_id": row.id, "attempt": attempt.number, "channel": row.channel,
                   "outcome": outcome.value, "next_retry_seconds": delay},
        )
