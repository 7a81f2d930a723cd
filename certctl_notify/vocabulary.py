"""The model's words: statuses, channels, alert types, severities, attempt outcomes, job statuses.

No imports beyond `enum`, so the command line can offer these values (choices, completion) without
loading SQLAlchemy; `certctl_notify.model` re-exports them beside the tables that use them.
"""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    DEAD = "dead"
    READ = "read"


class Channel(enum.StrEnum):
    EMAIL = "Email"
    WEBHOOK = "Webhook"
    SLACK = "Slack"
    TEAMS = "Teams"
    PAGERDUTY = "PagerDuty"
    OPSGENIE = "OpsGenie"


class AlertType(enum.StrEnum):
    EXPIRATION_WARNING = "ExpirationWarning"
    RENEWAL_SUCCESS = "RenewalSuccess"
    RENEWAL_FAILURE = "RenewalFailure"
    DEPLOYMENT_SUCCESS = "DeploymentSuccess"
    DEPLOYMENT_FAILURE = "DeploymentFailure"
    POLICY_VIOLATION = "PolicyViolation"
    REVOCATION = "Revocation"


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


class Outcome(enum.StrEnum):
    """What one attempt ended in (``notification_attempts.outcome``)."""

    SENT = "sent"
    RETRY = "retry"
    DEAD = "dead"


class JobStatus(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    CANCELLED = "cancelled"
