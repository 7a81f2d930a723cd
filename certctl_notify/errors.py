"""A shallow error tree; each class says what happens next.

``NotifyError`` → ``ConfigError`` | ``ValidationError`` | ``DeliveryError`` (``TransientError``,
``PermanentError`` → ``ChannelNotConfigured``) | ``OperatorError`` (``NotFound``, ``WrongState``,
``JobConflict``) | ``ApiClientError``.
"""

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


class OperatorError(NotifyError):
    """Raised when an operator's action cannot be done as asked; nothing was changed."""


class NotFound(OperatorError):
    """Raised when no notification or requeue job has the given id (the API's 404)."""


class WrongState(OperatorError):
    """Raised when a row's or job's state does not allow the action, e.g. requeue of a sent row (409)."""


class JobConflict(OperatorError):
    """Raised when a bulk requeue is asked for while another runs: one at a time keeps the rate a bound (409)."""


class ApiClientError(NotifyError):
    """Raised by the CLI's API client when the API answers with an error envelope or cannot be reached.

    Parameters:
        status: the HTTP status, or None when the API could not be reached.
        code: the envelope's ``error`` code.
    """

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
