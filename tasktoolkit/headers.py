"""What the caller says about a request, parsed from its headers.

:class:`TaskContext` from Cloud Tasks' ``X-CloudTasks-*`` headers, :class:`ScheduleContext` from Cloud
Scheduler's ``X-CloudScheduler-*`` headers.
"""

from __future__ import annotations

import datetime
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasktoolkit.errors import InvalidTaskRequest

QUEUE_NAME = "X-CloudTasks-QueueName"
TASK_NAME = "X-CloudTasks-TaskName"
RETRY_COUNT = "X-CloudTasks-TaskRetryCount"
EXECUTION_COUNT = "X-CloudTasks-TaskExecutionCount"
ETA = "X-CloudTasks-TaskETA"
PREVIOUS_RESPONSE = "X-CloudTasks-TaskPreviousResponse"
RETRY_REASON = "X-CloudTasks-TaskRetryReason"
# The same names in lower case: the keys :func:`task_context` looks up.
_QUEUE_NAME, _TASK_NAME, _RETRY_COUNT, _EXECUTION_COUNT, _ETA, _PREVIOUS_RESPONSE, _RETRY_REASON = (
    name.lower()
    for name in (QUEUE_NAME, TASK_NAME, RETRY_COUNT, EXECUTION_COUNT, ETA, PREVIOUS_RESPONSE, RETRY_REASON)
)
#: Cloud Scheduler's headers (target.proto ``HttpTarget.headers``).
SCHEDULER_JOB_NAME = "X-CloudScheduler-JobName"
SCHEDULER_SCHEDULE_TIME = "X-CloudScheduler-ScheduleTime"
#: RFC 3339 with a ``Z`` or an offset ("as an offset of UTC parsed according to RFC3339", target.proto).
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)")
#: A job id (job.proto ``name``: letters, numbers, hyphens or underscores, at most 500 characters).
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,500}")

#: Queue and task ids are short printable names; anything else is not from Cloud Tasks.
_NAME = re.compile(r"[\x21-\x7e]{1,500}")
#: Largest count header: Cloud Tasks keeps its counts as int32 (reference §2.2, ``dispatchCount``).
MAX_COUNT = 2**31 - 1
_COUNT_DIGITS = len(str(MAX_COUNT))
#: Characters of a rejected value quoted back in an error message.
_SHOWN_CHARS = 40


@dataclass(frozen=True)
class TaskContext:
    """One delivery of a task, as Cloud Tasks describes it (reference §5.1).

    The headers are information, not identity: the handler trusts them only after the OIDC token checks out.
    """

    #: Short queue id, e.g. ``"emails"``.
    queue_name: str
    #: Short task id, e.g. ``"welcome-42"`` (Cloud Tasks generates one when the task was created unnamed).
    task_name: str
    #: Number of earlier dispatches of this task, including 5xx answers and timeouts.
    retry_count: int
    #: Number of earlier dispatches that got a non-5xx answer.
    execution_count: int
    #: When the task was scheduled to run (UTC).
    eta: datetime.datetime
    #: HTTP status of the previous attempt, absent on the first attempt.
    previous_response: int | None
    #: Why the task is retried (often empty), absent on the first attempt.
    retry_reason: str | None
    #: The raw request body.
    body: bytes
    #: The body parsed as JSON; ``None`` for an empty body or when JSON parsing is turned off.
    payload: Any

    @property
    def is_retry(self) -> bool:
        """Whether an earlier dispatch of this task happened."""
        return self.retry_count > 0


def _shown(value: str) -> str:
    """``value`` quoted for an error message, cut to a readable length."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"


def _get(headers: Mapping[str, str], name: str) -> str | None:
    """The header ``name`` from ``headers`` keyed in lower case."""
    return headers.get(name.lower())


def _required(headers: Mapping[str, str], name: str, lowered: str) -> str:
    """The header ``name`` (``lowered``: its name in lower case, the key in ``headers``)."""
    value = headers.get(lowered)
    if value is None:
        raise InvalidTaskRequest(f"missing {name} header: not a Cloud Tasks request")
    return value


def _name(headers: Mapping[str, str], name: str, lowered: str) -> str:
    value = _required(headers, name, lowered)
    if not _NAME.fullmatch(value):
        raise InvalidTaskRequest(
            f"{name} must be 1-500 printable characters without spaces, got {_shown(value)}"
        )
    return value


def _count(name: str, value: str) -> int:
    # The length check comes first: int() refuses strings of thousands of digits with a ValueError.
    if value.isascii() and value.isdigit() and len(value) <= _COUNT_DIGITS:
        count = int(value)
        if count <= MAX_COUNT:
            return count
    raise InvalidTaskRequest(f"{name} must be an integer in [0, {MAX_COUNT}], got {_shown(value)}")


def _eta(value: str) -> datetime.datetime:
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or value.strip() != value:
        raise InvalidTaskRequest(
            f"{ETA} must be seconds since the epoch (e.g. 1721236265.27), got {_shown(value)}"
        )
    try:
        return datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise InvalidTaskRequest(f"{ETA} is out of range: {_shown(value)}") from exc


def parse_payload(body: bytes) -> Any:
    """Returns the body parsed as JSON, or ``None`` for an empty body.

    Raises:
        InvalidTaskRequest: The body is not UTF-8 JSON, or is nested deeper than the interpreter can parse.
    """
    if not body.strip():
        return None
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidTaskRequest(f"request body is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidTaskRequest("request body is not valid JSON: nested too deeply") from exc


def parse_task_context(headers: Mapping[str, str], body: bytes, *, parse_json: bool = True) -> TaskContext:
    """Builds the TaskContext of a delivery from its headers and body.

    Args:
        headers: Request headers (any case).
        body: Raw request body.
        parse_json: Parse the body as JSON into ``payload``; when false ``payload`` is ``None``.

    Raises:
        InvalidTaskRequest: A required header is missing or a header value is malformed (names the header).
    """
    return task_context({key.lower(): value for key, value in headers.items()}, body, parse_json=parse_json)


def task_context(headers: Mapping[str, str], body: bytes, *, parse_json: bool = True) -> TaskContext:
    """:func:`parse_task_context` of headers whose names are already in lower case."""
    previous = headers.get(_PREVIOUS_RESPONSE)
    # Positional arguments, in the order of the fields: a keyword call costs a third more.
    return TaskContext(
        _name(headers, QUEUE_NAME, _QUEUE_NAME),
        _name(headers, TASK_NAME, _TASK_NAME),
        _count(RETRY_COUNT, _required(headers, RETRY_COUNT, _RETRY_COUNT)),
        _count(EXECUTION_COUNT, _required(headers, EXECUTION_COUNT, _EXECUTION_COUNT)),
        _eta(_required(headers, ETA, _ETA)),
        _count(PREVIOUS_RESPONSE, previous) if previous is not None else None,
        headers.get(_RETRY_REASON),
        body,
        parse_payload(body) if parse_json else None,
    )


@dataclass(frozen=True)
class ScheduleContext:
    """One fire of a Cloud Scheduler job, as its ``X-CloudScheduler-*`` headers describe it.

    Cloud Scheduler sends no attempt number: a retry of a fire carries the same schedule time as its first
    attempt, and nothing tells the two apart. Like the task headers, these are trusted only after the OIDC
    token checks out.
    """

    #: The job id, e.g. ``"weekly-digest"`` (``X-CloudScheduler-JobName``).
    job_name: str
    #: The fire time being attempted (``X-CloudScheduler-ScheduleTime``), aware, in UTC.
    schedule_time: datetime.datetime
    #: The raw request body (the job's ``body``).
    body: bytes

    @property
    def fire_id(self) -> str:
        """``<job id>@<schedule time>`` (RFC 3339 UTC): the same for every attempt and duplicate of a fire."""
        return f"{self.job_name}@{format_utc(self.schedule_time)}"


def format_utc(instant: datetime.datetime) -> str:
    """``2026-11-30T09:00:00Z``: RFC 3339 in UTC, microseconds only when there are some."""
    utc = instant.astimezone(datetime.UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{utc.microsecond:06d}Z" if utc.microsecond else f"{text}Z"


def _schedule_time(value: str) -> datetime.datetime:
    problem = f"{SCHEDULER_SCHEDULE_TIME} must be an RFC 3339 time such as 2026-11-30T09:00:00Z"
    if not _RFC3339.fullmatch(value):
        raise InvalidTaskRequest(f"{problem}, got {_shown(value)}")
    head, dot, rest = value.upper().replace("Z", "+00:00").partition(".")
    if dot:  # fromisoformat takes at most six fractional digits
        digits = rest[: len(rest) - 6]
        head = f"{head}.{digits[:6].ljust(6, '0')}{rest[-6:]}"
    try:
        return datetime.datetime.fromisoformat(head).astimezone(datetime.UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidTaskRequest(f"{problem}, got {_shown(value)}") from exc


def parse_schedule_context(headers: Mapping[str, str], body: bytes) -> ScheduleContext:
    """Builds the ScheduleContext of a fire from its headers and body.

    Args:
        headers: Request headers (any case).
        body: Raw request body.

    Raises:
        InvalidTaskRequest: A scheduler header is missing or malformed (the message names it).
    """
    headers = {key.lower(): value for key, value in headers.items()}
    job = _get(headers, SCHEDULER_JOB_NAME)
    if job is None:
        raise InvalidTaskRequest(f"missing {SCHEDULER_JOB_NAME} header: not a Cloud Scheduler request")
    if not JOB_ID.fullmatch(job):
        raise InvalidTaskRequest(
            f"{SCHEDULER_JOB_NAME} must be 1-500 letters, numbers, hyphens or underscores, got {_shown(job)}"
        )
    time = _get(headers, SCHEDULER_SCHEDULE_TIME)
    if time is None:
        raise InvalidTaskRequest(f"missing {SCHEDULER_SCHEDULE_TIME} header: not a Cloud Scheduler request")
    return ScheduleContext(job_name=job, schedule_time=_schedule_time(time), body=body)
