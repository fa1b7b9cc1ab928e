"""Errors of the local runner, each carrying a canonical Cloud Tasks (google.rpc) code."""

from __future__ import annotations

import enum


class Code(enum.Enum):
    """Canonical google.rpc codes with their HTTP mapping (google/rpc/code.proto)."""

    INVALID_ARGUMENT = (3, 400)
    DEADLINE_EXCEEDED = (4, 504)
    NOT_FOUND = (5, 404)
    ALREADY_EXISTS = (6, 409)
    PERMISSION_DENIED = (7, 403)
    RESOURCE_EXHAUSTED = (8, 429)
    FAILED_PRECONDITION = (9, 400)
    UNIMPLEMENTED = (12, 501)
    INTERNAL = (13, 500)
    UNAVAILABLE = (14, 503)

    @property
    def rpc_code(self) -> int:
        """The numeric google.rpc code."""
        return self.value[0]

    @property
    def http_status(self) -> int:
        """The HTTP status the REST API answers with."""
        return self.value[1]


class RunnerError(Exception):
    """Root of every error the local runner raises."""


class ApiError(RunnerError):
    """A request was refused; carries the canonical code and the real service's message."""

    code: Code = Code.INTERNAL

    def __init__(self, message: str, code: Code | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidArgument(ApiError):
    """A field is malformed or out of its allowed range."""

    code = Code.INVALID_ARGUMENT


class NotFound(ApiError):
    """The queue or task does not exist."""

    code = Code.NOT_FOUND


class AlreadyExists(ApiError):
    """A queue or task with this name exists, or existed too recently."""

    code = Code.ALREADY_EXISTS


class FailedPrecondition(ApiError):
    """The request is valid but the resource's state forbids it."""

    code = Code.FAILED_PRECONDITION


class StoreError(RunnerError):
    """The task store could not be opened, read or written."""


class StoreFull(StoreError):
    """The task store could not grow: its disk, or the file size it may reach, is full."""


QUEUE_NOT_FOUND = (
    "Queue does not exist. If you just created the queue, wait at least a minute for the queue to initialize."
)
ENTITY_NOT_FOUND = "Requested entity was not found."
TASK_GONE = (
    "The task no longer exists, though a task with this name existed recently. "
    "The task either successfully completed or was deleted."
)
TASK_EXISTS = "Requested entity already exists"
TASK_TOMBSTONED = (
    "The task cannot be created because a task with this name existed too recently. For more information "
    "about task de-duplication see https://cloud.google.com/tasks/docs/reference/rest/v2/"
    "projects.locations.queues.tasks/create#body.request_body.FIELDS.task."
)
QUEUE_EXISTS = "Queue already exists"
QUEUE_TOMBSTONED = "The queue cannot be created because a queue with this name existed too recently."
