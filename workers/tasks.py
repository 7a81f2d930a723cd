"""The Celery tasks: deliver (one attempt, retried by Celery), enqueue (intake), bulk_requeue, and those
that beat runs: release_retries (due retries waiting in PostgreSQL), sweep (lost work), fold_counts and
purge (retention)."""

from __future__ import annotations

import logging

from celery import Celery, Task
from celery.exceptions import Reject

from certctl_notify import store
from certctl_notify.bulk import CHUNK_SECONDS, run_chunk
from certctl_notify.db import UNAVAILABLE
from certctl_notify.delivery import Attempt
from certctl_notify.errors import DeliveryError, TransientError, ValidationError
from certctl_notify.intake import enqueue_alert
from certctl_notify.model import utcnow
from certctl_notify.publish import (
    BULK_REQUEUE_TASK,
    DELIVER_TASK,
    ENQUEUE_TASK,
    FOLD_COUNTS_TASK,
    PURGE_TASK,
    RELEASE_TASK,
    SWEEP_TASK,
    CeleryDispatcher,
)
from certctl_notify.release import release_due_retries
from certctl_notify.retention import PURGE_BUDGET_SECONDS, purge
from certctl_notify.sweep import sweep_once
from workers.runtime import Runtime

log = logging.getLogger("certctl_notify.tasks")

#: Longest wait between two tries of an intake whose database cannot be reached, in seconds.
INTAKE_RETRY_CAP_SECONDS = 60


def _attempt_number(args, kwargs) -> int:
    return int(args[1] if len(args) > 1 else kwargs.get("attempt", 1))


def register_tasks(app: Celery, runtime: Runtime) -> None:
    """Attach deliver, enqueue, bulk_requeue and sweep to ``app``; they reach the database and channels
    through ``runtime``."""
    dispatcher = CeleryDispatcher(app)
    policy = runtime.policy

    class DeliverTask(Task):
        def on_failure(self, exc, task_id, args, kwargs, einfo):
            """The failure handler writes the dead row: budget spent or a permanent error.

            Other failures (a database outage while claiming or recording) leave the row as it was,
            with its lease; the sweep re-dispatches it, so it is never lost.
            """
            if not isinstance(exc, DeliveryError) or not args:
                log.error("deliver %s failed outside the channel (%s: %s); the sweep will retry it",
                          args[:1], type(exc).__name__, exc)
                return
            notification_id = args[0]
            # The attempt the task body made (its start times the log line and bounds how long the
            # record may wait for the database); rebuilt only if the body never got that far.
            attempt = getattr(self.request, "certctl_attempt", None) or Attempt(
                notification_id, _attempt_number(args, kwargs), task_id, runtime.hostname)
            runtime.delivery.record_dead(notification_id, attempt, exc)

    @app.task(
        bind=True, base=DeliverTask, name=DELIVER_TASK, max_retries=policy.max_attempts - 1,
        acks_late=True, reject_on_worker_lost=True,
        # Expected outcomes: logged by our attempt line, not as a worker error with a traceback.
        throws=(DeliveryError,),
    )
    def deliver(self, notification_id: str, attempt: int = 1) -> str:
        """Make attempt ``attempt`` of one notification: claim, send, record, retry or fail."""
        current = Attempt(notification_id, int(attempt), self.request.id, self.request.hostname or runtime.hostname)
        self.request.certctl_attempt = current  # for on_failure, which runs in this request's context
        delivery = runtime.delivery
        row = delivery.claim(current)
        if row is None:
            return "skipped"
        try:
            sent = delivery.send(row, current)
        except TransientError as exc:
            if policy.exhausted(current.number):
                raise  # on_failure writes the dead row
            delay = delivery.record_retry(row, current, exc)
            if delay is None:
                return "superseded"
            if not policy.held(delay):
                return "waiting"  # in PostgreSQL: the release of due retries publishes it when due
            # Celery's autoretry_for would cast a sub-second base to 1 s and cannot honour
            # Retry-After, so the countdown comes from our RetryPolicy; the retry machinery is Celery's.
            raise self.retry(args=[notification_id, current.number + 1], kwargs={}, countdown=delay, exc=exc)
        delivery.record_sent(row, current, sent)
        return "sent"

    @app.task(
        bind=True, name=ENQUEUE_TASK, acks_late=True,
        # Until its row is committed this message is the alert's only copy: a database that cannot be
        # reached is waited out with Celery's retries (1 s doubling to INTAKE_RETRY_CAP_SECONDS, for
        # as long as it takes), never acknowledged as a failure.
        autoretry_for=UNAVAILABLE, retry_backoff=True, retry_backoff_max=INTAKE_RETRY_CAP_SECONDS,
        max_retries=None,
    )
    def enqueue(self, *args, **fields) -> list[str]:
        """Intake for services that hold only the broker URL: ``send_task("certctl_notify.enqueue", kwargs=…)``."""
        try:
            if args:
                raise ValidationError("certctl_notify.enqueue takes keyword arguments only")
            results = enqueue_alert(runtime.sessions, dispatcher, fields, source=self.request.id)
        except ValidationError as exc:
            log.error("refused %s message %s: %s; nothing was created", ENQUEUE_TASK, self.request.id, exc)
            raise Reject(str(exc), requeue=False) from None
        return [result.row.id for result in results]

    @app.task(name=BULK_REQUEUE_TASK, acks_late=True)
    def bulk_requeue(job_id: str, generation: int = 0) -> None:
        """One chunk (~5 s) of a bulk requeue job; publishes the next chunk while work remains."""
        # half the time limit per chunk, so a chunk never meets the soft limit mid-batch
        chunk = min(CHUNK_SECONDS, runtime.settings.worker.task_time_limit_seconds / 2)
        if run_chunk(runtime.sessions, dispatcher, job_id, generation, chunk_seconds=chunk, metrics=runtime.metrics):
            dispatcher.run_requeue_job(job_id, generation)

    @app.task(name=SWEEP_TASK)
    def sweep() -> int:
        """One sweep tick (beat runs it every CERTCTL_NOTIFICATION_RETRY_INTERVAL)."""
        return sweep_once(runtime.sessions, dispatcher, runtime.settings.sweep, metrics=runtime.metrics).total

    @app.task(name=FOLD_COUNTS_TASK)
    def fold_counts() -> int:
        """Fold the status counts' and the hourly attempt counts' deltas into their bases (beat runs it
        every few seconds)."""
        with runtime.sessions.begin() as session:
            return store.fold_deltas(session) + store.fold_hourly(session, now=utcnow())

    @app.task(name=PURGE_TASK)
    def purge_expired() -> int:
        """Delete the rows past their retention (beat runs it every CERTCTL_RETENTION_INTERVAL); returns how many."""
        # half the time limit at most, so a run never meets the soft limit mid-batch
        budget = min(PURGE_BUDGET_SECONDS, runtime.settings.worker.task_time_limit_seconds / 2)
        return purge(runtime.sessions, runtime.settings.retention, budget_seconds=budget,
                     metrics=runtime.metrics).total

    @app.task(name=RELEASE_TASK)
    def release_retries() -> int:
        """Publish the retries waiting in PostgreSQL that are due (beat runs it every
        CERTCTL_RETRY_RELEASE_INTERVAL)."""
        return release_due_retries(runtime.sessions, dispatcher)
