"""Every SQL statement certctl-notify runs, split by what it stores:

- `notifications`: intake, lookups, counts by status;
- `transitions`: the claim and every status change, each one guarded statement (`transitions.guarded`);
- `attempts`: the per-attempt audit trail;
- `listing`: filtered listings, summaries, the rows a filter matches;
- `activity`: attempt outcomes per hour and channel (the console's chart);
- `audit`: the operator audit log; `jobs`: bulk requeue jobs; `redispatch`: what the sweep re-publishes;
- `counts`: rows per status as the triggers keep them (exact, no scan);
- `retention`: the rows past their age, counted or deleted a batch at a time;
- `dialect`: everything that differs between PostgreSQL and SQLite.

Functions take a Core `Connection` inside a transaction and never commit: the caller frames the
transaction. The names below are the store's API, so callers write ``store.claim(...)``.
"""

from certctl_notify.store.activity import (
    HourBucket,
    OutcomeCounts,
    fold_hourly,
    hourly_outcomes,
    last_finished_attempt,
)
from certctl_notify.store.attempts import MAX_ERROR_CHARS, finish_attempt, list_attempts
from certctl_notify.store.audit import add_audit, list_audit
from certctl_notify.store.counts import fold_deltas, recount, status_counts_now
from certctl_notify.store.dialect import try_sweep_lock
from certctl_notify.store.jobs import (
    advance_job,
    cancel_job,
    finish_job,
    get_job,
    insert_job,
    job_batch_ids,
    running_job,
    take_over_stalled_jobs,
)
from certctl_notify.store.listing import (
    NotificationFilter,
    count_matching,
    counts_by_status,
    list_notifications,
    summary,
)
from certctl_notify.store.notifications import (
    count_by_status,
    get,
    get_by_dedupe_key,
    insert_notification,
    insert_notification_audited,
)
from certctl_notify.store.redispatch import due_for_redispatch, mark_dispatched, take_due_retries
from certctl_notify.store.retention import PURGEABLE, count_purgeable, purge_batch
from certctl_notify.store.transitions import (
    claim,
    mark_dead,
    mark_failed,
    mark_read,
    mark_sent,
    record_sent,
    requeue,
    requeue_many,
)

__all__ = [
    "add_audit", "advance_job", "cancel_job", "claim", "count_by_status", "count_matching", "count_purgeable",
    "counts_by_status", "due_for_redispatch", "finish_attempt", "finish_job", "fold_deltas", "fold_hourly", "get",
    "get_by_dedupe_key", "get_job", "HourBucket", "hourly_outcomes", "insert_job", "insert_notification",
    "insert_notification_audited", "job_batch_ids", "last_finished_attempt", "list_attempts", "list_audit",
    "list_notifications", "mark_dead", "mark_dispatched", "mark_failed", "mark_read", "mark_sent",
    "MAX_ERROR_CHARS", "NotificationFilter", "OutcomeCounts", "purge_batch", "PURGEABLE", "record_sent",
    "recount", "requeue", "requeue_many", "running_job", "status_counts_now", "summary", "take_due_retries",
    "take_over_stalled_jobs", "try_sweep_lock",
]
