"""What an attempt's outcome means for its task: counts, next schedule time or the end (sans-IO)."""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from local_runner.engine.retry import TASK_RETENTION, backoff_interval, retries_exhausted
from local_runner.model import NO_RESPONSE_STATUS, Attempt, RetryConfig, RpcStatus, Task, TaskState

#: google.rpc codes for the HTTP statuses a handler may answer (google/rpc/code.proto mapping).
_RPC_CODE_BY_HTTP = {
    400: 3,  # INVALID_ARGUMENT
    401: 16,  # UNAUTHENTICATED
    403: 7,  # PERMISSION_DENIED
    404: 5,  # NOT_FOUND
    409: 10,  # ABORTED
    412: 9,  # FAILED_PRECONDITION
    429: 8,  # RESOURCE_EXHAUSTED
    499: 1,  # CANCELLED
    501: 12,  # UNIMPLEMENTED
    503: 14,  # UNAVAILABLE
    504: 4,  # DEADLINE_EXCEEDED
}
_DEADLINE_EXCEEDED = 4
_UNAVAILABLE = 14
#: Statuses that tell Cloud Tasks the target is overloaded, so the queue slows down.
THROTTLING_STATUSES = frozenset({429, 503})


class Failure(enum.Enum):
    """Why an attempt got no HTTP response."""

    DEADLINE = "deadline"
    UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as seen by the dispatcher."""

    response_time: float
    #: The handler's HTTP status, or ``None`` when no response came.
    http_status: int | None = None
    failure: Failure | None = None
    #: Seconds from the handler's ``Retry-After`` header, if it sent one.
    retry_after: float | None = None
    #: Human-readable detail for failures without a response (refused, DNS, reset...).
    detail: str = ""
    #: The first bytes of the response body (shown by the console, never stored).
    excerpt: bytes = b""

    @property
    def succeeded(self) -> bool:
        """2xx is the only success (reference §5.2)."""
        return self.http_status is not None and 200 <= self.http_status <= 299

    @property
    def throttles(self) -> bool:
        """Whether the handler asked the queue to slow down (429 or 503)."""
        return self.http_status in THROTTLING_STATUSES


def rpc_status(outcome: Outcome, dispatch_deadline: float) -> RpcStatus:
    """The google.rpc.Status recorded for an attempt, worded like the real service's console."""
    if outcome.failure is Failure.DEADLINE:
        return RpcStatus(_DEADLINE_EXCEEDED, f"The dispatch deadline of {dispatch_deadline:g}s was exceeded.")
    if outcome.http_status is None:
        return RpcStatus(_UNAVAILABLE, outcome.detail or "The target could not be reached.")
    status = outcome.http_status
    if 200 <= status <= 299:
        return RpcStatus(0, "OK")
    code = _RPC_CODE_BY_HTTP.get(status, 13 if status >= 500 else 9 if status >= 400 else 2)
    return RpcStatus(code, f"HTTP status code {status}")


def previous_response_code(attempt: Attempt) -> int:
    """The ``X-CloudTasks-TaskPreviousResponse`` value after this attempt (504 after a deadline)."""
    if attempt.http_status is not None:
        return attempt.http_status
    code = attempt.response_status.code if attempt.response_status else _UNAVAILABLE
    return NO_RESPONSE_STATUS if code == _DEADLINE_EXCEEDED else 503


@dataclass(frozen=True)
class FinishedAttempt:
    """An attempt's outcome applied to its task: what the store records (``TaskStore.finish_attempts``)."""

    #: The task as it stands after the attempt (QUEUED with a new schedule time, or EXHAUSTED).
    task: Task
    attempt: Attempt
    #: Tombstone the task's name until then: a successful task is deleted, an EXHAUSTED one is kept
    #: (inspectable, replayable) without holding the name. ``None`` stores ``task`` and nothing else.
    tombstone_until: float | None = None
    #: Seconds until the next attempt; ``None`` when there is none.
    next_retry_in: float | None = None

    @property
    def deletes(self) -> bool:
        """Whether recording it deletes the task (success; an EXHAUSTED task is kept)."""
        return self.tombstone_until is not None and self.task.state is not TaskState.EXHAUSTED

    def duplicated(self, http_status: int | None) -> FinishedAttempt:
        """The same, its attempt marked as delivered twice (the second delivery answered ``http_status``)."""
        attempt = dataclasses.replace(self.attempt, duplicated=True, duplicate_http_status=http_status)
        return dataclasses.replace(self, attempt=attempt)


def decide(task: Task, outcome: Outcome, queue_retry: RetryConfig, *, tombstone: float) -> FinishedAttempt:
    """Apply an outcome to the task that was claimed for this attempt.

    ``task`` is the claimed task (its ``last_attempt`` holds the schedule and dispatch times). Counts
    follow the real service: every dispatch counts as a retry, every response as a response, and
    only non-5xx responses as executions. A task that ended (done, or retries exhausted) holds its
    name for ``tombstone`` seconds after the response.
    """
    started = task.last_attempt
    if started is None:
        raise ValueError(f"task {task.name} has no attempt in flight")
    now = outcome.response_time
    status = outcome.http_status
    attempt = Attempt(
        schedule_time=started.schedule_time,
        dispatch_time=started.dispatch_time,
        response_time=now if status is not None else None,
        http_status=status,
        response_status=rpc_status(outcome, task.dispatch_deadline),
    )
    updated = task.replace(
        last_attempt=attempt,
        previous_response=previous_response_code(attempt),
        response_count=task.response_count + (status is not None),
        execution_count=task.execution_count + (status is not None and status < 500),
    )
    ended = now + tombstone
    if outcome.succeeded:
        return FinishedAttempt(updated, attempt, tombstone_until=ended)
    config = task.retry_config or queue_retry
    first = task.first_attempt.dispatch_time if task.first_attempt else started.dispatch_time
    if retries_exhausted(config, task.dispatch_count, first, task.create_time, now):
        return FinishedAttempt(updated.replace(state=TaskState.EXHAUSTED), attempt, tombstone_until=ended)
    delay = backoff_interval(config, task.dispatch_count)
    if outcome.retry_after is not None:
        delay = max(delay, outcome.retry_after)
    if now + delay >= task.create_time + TASK_RETENTION:  # deleted by retention before the retry is due
        return FinishedAttempt(updated.replace(state=TaskState.EXHAUSTED), attempt, tombstone_until=ended)
    queued = updated.replace(state=TaskState.QUEUED, schedule_time=now + delay)
    return FinishedAttempt(queued, attempt, next_retry_in=delay)


def replayed_task(task: Task, now: float) -> Task:
    """An exhausted task queued again at ``now`` as if new (what ``replay_exhausted`` stores)."""
    return task.replace(
        state=TaskState.QUEUED,
        schedule_time=now,
        dispatch_count=0,
        response_count=0,
        execution_count=0,
        first_attempt=None,
        last_attempt=None,
        previous_response=None,
    )
