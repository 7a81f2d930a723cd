"""Notifications made in SQL (``generate_series``) for the benchmarks that need a large table: a 30-day
mix of statuses, 6 channels, 7 types, certificate ids that repeat, ``last_error`` on failed and dead
rows (a fifth of them "HTTP 503 … from https://…"), attempts and audit entries; then ``VACUUM (ANALYZE)``,
the state autovacuum keeps a long-lived table in (all-visible pages, fresh statistics).

One ``INSERT … SELECT`` per table, so 10 million rows take minutes, not hours. Used by bench/console.py
and bench/scale.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Mix:
    """Share of the rows in each status (they add up to 1); pending rows are from the last 15 minutes."""

    sent: float
    read: float
    dead: float
    failed: float
    pending: float

    def bounds(self) -> dict[str, float]:
        """Cumulative upper bounds of a uniform draw, by status (pending takes the rest)."""
        if abs(self.sent + self.read + self.dead + self.failed + self.pending - 1) > 1e-9:
            raise ValueError(f"the shares of {self} do not add up to 1")
        edges, total = {}, 0.0
        for status in ("sent", "read", "dead", "failed"):
            total += getattr(self, status)
            edges[status] = total
        return edges


EVENTS = """
INSERT INTO notification_events (id, type, certificate_id, channel, recipient, message, severity, status,
    retry_count, next_retry_at, last_error, sent_at, created_at, updated_at, dispatched_at)
SELECT 'notif_' || md5(%(tag)s || i::text), type, cert, channel,
       CASE channel WHEN 'Email' THEN 'pki-team@example.test' WHEN 'Slack' THEN '#cert-alerts'
                    WHEN 'Teams' THEN 'PKI' ELSE '' END,
       CASE type WHEN 'ExpirationWarning' THEN format('certificate %%s (%%s.example.test) expires in %%s days',
                                                        cert, cert, 1 + floor(rw * 30))
                 WHEN 'Revocation' THEN format('certificate %%s was revoked (keyCompromise)', cert)
                 ELSE format('%%s for certificate %%s on %%s.example.test', type, cert, cert) END,
       CASE WHEN type IN ('RenewalFailure', 'DeploymentFailure') THEN 'error' WHEN type = 'Revocation' THEN 'critical'
            WHEN type = 'ExpirationWarning' OR type = 'PolicyViolation' THEN 'warning' ELSE 'info' END,
       status, retries,
       CASE WHEN status = 'failed' THEN now() + (rw * 20 - 2) * interval '1 minute' END,
       CASE WHEN status IN ('failed', 'dead') THEN (ARRAY[
            'HTTP 503 Service Unavailable from https://hooks.example.test/certctl',
            'timed out after 10 s connecting to smtp.example.test:587',
            'HTTP 429 Too Many Requests (Retry-After: 30)',
            'HTTP 410 Gone: the Slack webhook URL was revoked',
            'TLS handshake with events.pagerduty.example.test failed: certificate verify failed'
            ])[1 + floor(re * 5)::int] END,
       CASE WHEN status IN ('sent', 'read') THEN created + (1 + 60 * retries) * interval '1 second' END,
       created,
       CASE WHEN status = 'read' THEN least(now(), created + interval '2 hours')
            ELSE created + (1 + 60 * retries) * interval '1 second' END,
       created
FROM (
    SELECT i, rw, re, status, type, channel, cert,
           -- pending rows are young: a pending row from last week would be a stuck sweep, not a realistic mix;
           -- the others are spread over 30 days, in insertion order (as a live table's heap is) when ordered
           now() - CASE WHEN status = 'pending' THEN ru * interval '15 minutes'
                        WHEN %(ordered)s THEN (1 - (i - ru) / %(rows)s) * interval '30 days'
                        ELSE ru * interval '30 days' END AS created,
           CASE WHEN status IN ('sent', 'read') THEN (rw < .3)::int WHEN status = 'dead' THEN 5
                WHEN status = 'failed' THEN 1 + floor(rw * 3)::int ELSE 0 END AS retries
    FROM (
        SELECT i, rw, re, ru,
               CASE WHEN rs < %(sent)s THEN 'sent' WHEN rs < %(read)s THEN 'read' WHEN rs < %(dead)s THEN 'dead'
                    WHEN rs < %(failed)s THEN 'failed' ELSE 'pending' END AS status,
               CASE WHEN rt < .60 THEN 'ExpirationWarning' WHEN rt < .75 THEN 'RenewalSuccess'
                    WHEN rt < .80 THEN 'RenewalFailure' WHEN rt < .92 THEN 'DeploymentSuccess'
                    WHEN rt < .95 THEN 'DeploymentFailure' WHEN rt < .99 THEN 'PolicyViolation'
                    ELSE 'Revocation' END AS type,
               CASE WHEN rc < .30 THEN 'Email' WHEN rc < .55 THEN 'Slack' WHEN rc < .75 THEN 'Webhook'
                    WHEN rc < .87 THEN 'Teams' WHEN rc < .95 THEN 'PagerDuty' ELSE 'OpsGenie' END AS channel,
               'mc-' || lpad(floor(rk * rk * 20000)::int::text, 5, '0') AS cert  -- a few certificates recur a lot
        FROM (SELECT i, random() AS rs, random() AS rt, random() AS rc, random() AS rk, random() AS rw,
                     random() AS re, random() AS ru
              FROM generate_series(1, %(rows)s) AS i) r
    ) s
) t
"""
#: Every attempt of the rows created in the last 24 h: sent/read 1 (+1 retry for 30 %), failed 1–3, dead 5.
#: (Run without parameters, so "%" is SQL's modulo here.)
ATTEMPTS_LAST_DAY = """
INSERT INTO notification_attempts (notification_id, attempt, started_at, finished_at, outcome, error_class,
    error, status_code, duration_ms, worker, task_id, channel)
SELECT id, k, started, started + ms * interval '1 millisecond', outcome,
       CASE WHEN outcome <> 'sent' THEN 'transient' END, CASE WHEN outcome <> 'sent' THEN last_error END,
       CASE WHEN outcome = 'sent' THEN 200 ELSE 503 END, ms, 'celery@worker-' || (1 + k % 2), md5(id || k), channel
FROM (
    SELECT e.id, e.channel, e.last_error, k, e.created_at + 60 * (2 ^ (k - 1) - 1) * interval '1 second' AS started,
           (20 + floor(random() * 400))::int AS ms,
           CASE WHEN k < n THEN 'retry' WHEN e.status IN ('sent', 'read') THEN 'sent'
                WHEN e.status = 'dead' THEN 'dead' ELSE 'retry' END AS outcome
    FROM notification_events e
    CROSS JOIN LATERAL (SELECT CASE e.status WHEN 'dead' THEN 5 WHEN 'failed' THEN e.retry_count
                                             WHEN 'pending' THEN 0 ELSE e.retry_count + 1 END AS n) a
    CROSS JOIN LATERAL generate_series(1, a.n) AS k
    WHERE e.created_at >= now() - interval '24 hours'
) t
WHERE started + ms * interval '1 millisecond' <= now()
"""
#: One attempt per attempted row, its latest (the one that delivered, went dead or failed); pending rows
#: have none. (Run without parameters, so "%" is SQL's modulo here.)
ATTEMPTS_LAST_EACH = """
INSERT INTO notification_attempts (notification_id, attempt, started_at, finished_at, outcome, error_class,
    error, status_code, duration_ms, worker, task_id, channel)
SELECT id, k, started, started + ms * interval '1 millisecond', outcome,
       CASE WHEN outcome <> 'sent' THEN 'transient' END, CASE WHEN outcome <> 'sent' THEN last_error END,
       CASE WHEN outcome = 'sent' THEN 200 ELSE 503 END, ms, 'celery@worker-' || (1 + k % 2), md5(id || k), channel
FROM (
    SELECT id, channel, last_error, k, created_at + 60 * (2 ^ (k - 1) - 1) * interval '1 second' AS started,
           (20 + floor(random() * 400))::int AS ms,
           CASE WHEN status IN ('sent', 'read') THEN 'sent' WHEN status = 'dead' THEN 'dead' ELSE 'retry' END
               AS outcome
    FROM (SELECT e.*, CASE e.status WHEN 'dead' THEN 5 WHEN 'failed' THEN e.retry_count
                                    ELSE e.retry_count + 1 END AS k
          FROM notification_events e WHERE e.status <> 'pending') e
) t
WHERE started + ms * interval '1 millisecond' <= now()
"""
ATTEMPTS = {"last day": ATTEMPTS_LAST_DAY, "last each": ATTEMPTS_LAST_EACH}
AUDIT = """
INSERT INTO audit_log (at, actor, action, target, detail, request_id)
SELECT now() - random() * interval '30 days', (ARRAY['alice', 'bob', 'oncall-bot'])[1 + floor(random() * 3)::int],
       (ARRAY['requeue', 'mark_read', 'bulk_requeue'])[1 + floor(random() * 3)::int], 'notif_' || md5(i::text),
       '{"from": "dead"}'::json, md5('req' || i)
FROM generate_series(1, %(rows)s) AS i
"""
TABLES = ("notification_attempts", "notification_events", "audit_log")


def fill(cur, rows: int, *, mix: Mix, tag: str, attempts: str, audit_rows: int, ordered: bool = False,
         rebuild_indexes: bool = False) -> dict:
    """Empty the tables, fill them, ``VACUUM (ANALYZE)`` them; returns timings and what is in them.

    Parameters:
        cur: a cursor of an autocommit psycopg2 connection to the bench's own database.
        rows: notifications to make.
        tag: makes the ids (``notif_`` + md5 of tag and row number, like the service's uuid4 hex).
        attempts: ``"last day"`` (every attempt of the last 24 h) or ``"last each"`` (one per attempted row).
        ordered: rows in the heap in creation order, as in a table that only ever grew (else random order).
        rebuild_indexes: drop the indexes and constraints of the two tables, fill, then create exactly the
            same ones again (one sort per index instead of a random insertion per row and index).

    Returns:
        ``insert_s``, ``index_s``, ``vacuum_s`` (seconds), ``statuses`` (rows per status), ``attempts``,
        ``bytes`` (notification_events with its indexes).
    """
    out = {"index_s": 0.0}
    started = time.perf_counter()
    cur.execute(f"TRUNCATE {', '.join(TABLES)}")
    cur.execute("BEGIN")
    saved = _drop_indexes(cur) if rebuild_indexes else None
    cur.execute(EVENTS, {"rows": rows, "tag": tag, "ordered": ordered, **mix.bounds()})
    cur.execute(ATTEMPTS[attempts])
    cur.execute(AUDIT, {"rows": audit_rows})
    out["insert_s"] = time.perf_counter() - started
    if saved is not None:
        started = time.perf_counter()
        _recreate_indexes(cur, saved)
        out["index_s"] = time.perf_counter() - started
    started = time.perf_counter()
    cur.execute("COMMIT")
    out["insert_s"] += time.perf_counter() - started
    started = time.perf_counter()
    cur.execute(f"VACUUM (ANALYZE) {', '.join(TABLES)}")
    out["vacuum_s"] = time.perf_counter() - started
    cur.execute("SELECT status, count(*) FROM notification_events GROUP BY status")
    out["statuses"] = dict(cur.fetchall())
    cur.execute("SELECT count(*) FROM notification_attempts")
    out["attempts"] = cur.fetchone()[0]
    cur.execute("SELECT pg_total_relation_size('notification_events')")
    out["bytes"] = cur.fetchone()[0]
    return out


#: The tables whose indexes `rebuild_indexes` drops; audit_log keeps its own (1,000 rows).
_REBUILT = ("notification_events", "notification_attempts")
_DEFINITIONS = """
SELECT 'index', i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid), c.conrelid::regclass::text
FROM pg_index i LEFT JOIN pg_constraint c ON c.conindid = i.indexrelid AND c.contype IN ('p', 'u')
WHERE i.indrelid = ANY(%(tables)s::regclass[]) AND c.oid IS NULL
UNION ALL
SELECT 'constraint', c.conname, pg_get_constraintdef(c.oid), c.conrelid::regclass::text
FROM pg_constraint c
WHERE c.conrelid = ANY(%(tables)s::regclass[]) AND c.contype IN ('p', 'u', 'f')
ORDER BY 1, 2
"""


def _definitions(cur) -> list[tuple[str, str, str, str]]:
    """(kind, name, definition, table) of every index and key/foreign-key constraint of the rebuilt tables."""
    cur.execute(_DEFINITIONS, {"tables": list(_REBUILT)})
    return cur.fetchall()


def _drop_indexes(cur) -> list[tuple[str, str, str, str]]:
    saved = _definitions(cur)
    # foreign keys first (they need the primary key they point at), then keys, then plain indexes
    for kind, name, _, table in sorted(saved, key=lambda d: (not d[2].startswith("FOREIGN KEY"), d[0])):
        if kind == "constraint":
            cur.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        else:
            cur.execute(f"DROP INDEX {name}")
    return saved


def _recreate_indexes(cur, saved: list[tuple[str, str, str, str]]) -> None:
    # keys first (a foreign key needs the primary key), foreign keys last (one validating join)
    for kind, name, definition, table in sorted(saved, key=lambda d: (d[2].startswith("FOREIGN KEY"), d[0])):
        if kind == "constraint":
            cur.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        else:
            cur.execute(definition)
    if sorted(_definitions(cur)) != sorted(saved):
        raise RuntimeError("the indexes and constraints made again differ from those dropped")
