"""The exceptions of tasktoolkit: one root, each mapped to one HTTP answer by the handler."""

from __future__ import annotations

import math


class TaskToolkitError(Exception):
    """Root of every exception raised by tasktoolkit."""


class ConfigurationError(TaskToolkitError):
    """Raised at start-up when a setting is missing or invalid (the toolkit never starts half-configured)."""


class RetryTask(TaskToolkitError):
    """Raised by a handler to ask Cloud Tasks to retry later: answers 503 with ``Retry-After``.

    Args:
        delay_s: Seconds to wait before the next attempt (a hint; Cloud Tasks may wait longer).
        message: Optional text for the log.
    """

    def __init__(self, delay_s: float = 0.0, message: str = "") -> None:
        if not math.isfinite(delay_s) or delay_s < 0:
            raise ValueError(f"RetryTask delay_s must be a finite number >= 0, got {delay_s!r}")
        super().__init__(message or f"retry requested in {delay_s:g}s")
        self.delay_s = float(delay_s)


class PermanentFailure(TaskToolkitError):
    """Raised by a handler when retrying cannot help: the task is acknowledged and recorded as FAILED."""


class InvalidTaskRequest(TaskToolkitError):
    """Raised when a request has malformed ``X-CloudTasks-*`` headers or an unreadable body (400)."""


class TokenVerificationError(TaskToolkitError):
    """Raised when the bearer token is missing, malformed, unsigned by a trusted key or not for us (401)."""


class CallerNotAllowed(TaskToolkitError):
    """Raised when a valid token belongs to a service account that is not allowed or not verified (403)."""


class CertificateFetchError(TaskToolkitError):
    """Raised when the signing certificates cannot be fetched; the task should be retried (503)."""


class DedupStoreUnavailable(TaskToolkitError):
    """Raised when the dedup store cannot be reached or fails; the handler is not run (503)."""


class ApiError(TaskToolkitError):
    """Raised when Cloud Tasks, Cloud Scheduler or the local runner refuses a request; carries the answer.

    Both services speak the same canonical codes (``google.rpc.Code``), so one hierarchy serves both clients.

    Attributes:
        status: The canonical code name, e.g. ``"NOT_FOUND"``.
        http_status: The HTTP status the service answered (or would have answered).
        message: The service's own message.
        detail: What the client adds to the message: the resource it asked for, and how to fix it.
    """

    def __init__(self, status: str, message: str, http_status: int, *, detail: str = "") -> None:
        super().__init__(f"{status}: {message}" + (f" ({detail})" if detail else ""))
        self.status = status
        self.message = message
        self.http_status = http_status
        self.detail = detail


class AlreadyExists(ApiError):
    """The resource (a task, a queue, a job) exists already (ALREADY_EXISTS)."""


class TaskAlreadyExists(AlreadyExists):
    """A task with this name (or dedup key) exists or was deleted or executed recently (ALREADY_EXISTS)."""


class ResourceNotFound(ApiError):
    """The queue, task or job does not exist (NOT_FOUND)."""


class InvalidArgument(ApiError):
    """A field is missing or out of range (INVALID_ARGUMENT); the message names the field."""


class FailedPrecondition(ApiError):
    """The request does not fit the resource's state (FAILED_PRECONDITION), e.g. a queue deleted recently."""


class PermissionDenied(ApiError):
    """The caller's credentials are missing or lack the permission (PERMISSION_DENIED, UNAUTHENTICATED)."""


class ServiceUnavailable(ApiError):
    """The service stayed unreachable or overloaded through every retry (UNAVAILABLE, DEADLINE_EXCEEDED)."""


class JobSyncError(TaskToolkitError):
    """Raised when the app's jobs cannot be synced; the message names the job and what went wrong.

    A declared job id taken by a job the app does not manage, or a request the service refused.
    """
