"""A shallow error tree; each class says what happens next."""

from __future__ import annotations


class NotifyError(Exception):
    """Base of every certctl-notify error."""


class ConfigError(NotifyError):
    """Raised when a setting is malformed or inconsistent; the process refuses to start."""


class ValidationError(NotifyError):
    """Raised when a producer's input is invalid; nothing is written.

    Parameters:
        field: the offending field name, for the API's 422 body.
    """

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


class DeliveryError(NotifyError):
    """Raised by a channel when one delivery attempt did not deliver.

    Parameters:
        message: short reason, already redacted of secrets.
        status_code: the HTTP or SMTP reply code, when the peer answered.
    """

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class TransientError(DeliveryError):
    """Raised when retrying later may succeed; the task retries with backoff.

    Parameters:
        retry_after: seconds the peer asked us to wait (``Retry-After``), or None.
    """

    def __init__(self, message: str, *, status_code: int | None = None, retry_after: float | None = None):
        super().__init__(message, status_code=status_code)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    """Raised when retrying cannot help (bad request, auth, unconfigured channel); the row goes dead."""


class ChannelNotConfigured(PermanentError):
    """Raised when a channel's settings are missing; the row goes dead at once, naming the variable to set."""
