"""Cloud Tasks REST v2 resources as the enqueue client writes and reads them (pure, no I/O).

One place turns ``enqueue(...)`` options into a ``Task`` JSON body and ``ensure_queue(...)`` options into a
``Queue`` JSON body with its update mask, and reads tasks and queues back into small dataclasses. The client
and the fake queue both use it, so they validate the same way.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json as jsonlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tasktoolkit.errors import InvalidArgument

UTC = dt.UTC
HTTP_METHODS = ("POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")
#: Methods whose request may carry a body (``HttpRequest.body``).
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MIN_DISPATCH_DEADLINE = dt.timedelta(seconds=15)
MAX_DISPATCH_DEADLINE = dt.timedelta(minutes=30)
MAX_URL_LENGTH = 2083
_QUEUE_ID = re.compile(r"[A-Za-z0-9-]{1,100}")
_TASK_ID = re.compile(r"[A-Za-z0-9_-]{1,500}")
_FRACTION = re.compile(r"\.(\d+)")
_DURATION = re.compile(r"(-?\d+)(?:\.(\d{1,9}))?s")

#: ``rate_limits`` keys accepted by ``ensure_queue`` and their REST names.
RATE_LIMIT_FIELDS = {
    "max_dispatches_per_second": ("maxDispatchesPerSecond", False),
    "max_concurrent_dispatches": ("maxConcurrentDispatches", False),
}
#: ``retry_config`` keys accepted by ``ensure_queue`` and their REST names (durations marked True).
RETRY_FIELDS = {
    "max_attempts": ("maxAttempts", False),
    "max_retry_duration": ("maxRetryDuration", True),
    "min_backoff": ("minBackoff", True),
    "max_backoff": ("maxBackoff", True),
    "max_doublings": ("maxDoublings", False),
}


def invalid(message: str) -> InvalidArgument:
    """An INVALID_ARGUMENT error raised before anything is sent."""
    return InvalidArgument("INVALID_ARGUMENT", message, 400)


def task_id_for_key(dedup_key: str) -> str:
    """The task id for a dedup key: its SHA-256 in hex.

    Hash-distributed ids avoid the hot-spotting that sequential names cause, and two different keys never
    share an id (short of a SHA-256 collision).
    """
    if not isinstance(dedup_key, str) or not dedup_key:
        raise invalid(f"dedup_key must be a non-empty string, got {dedup_key!r}")
    return hashlib.sha256(dedup_key.encode("utf-8")).hexdigest()


def check_queue_id(queue: str) -> str:
    """Returns ``queue`` if it is a valid queue id (letters, digits, hyphens; 1-100 chars)."""
    if not isinstance(queue, str) or not _QUEUE_ID.fullmatch(queue):
        raise invalid(
            "queue must be a queue id of 1-100 letters ([A-Za-z]), numbers ([0-9]) or hyphens (-), "
            f"got {queue!r}"
        )
    return queue


def check_task_id(task_id: str) -> str:
    """Returns ``task_id`` if it is a valid task id (letters, digits, hyphens, underscores; 1-500 chars)."""
    if not isinstance(task_id, str) or not _TASK_ID.fullmatch(task_id):
        raise invalid(
            f'Task ID "{task_id}" can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), or '
            "underscores (_). Task ID must between 1 and 500 characters."
        )
    return task_id


# -- time ---------------------------------------------------------------------------------------------


def check_aware(name: str, value: dt.datetime) -> dt.datetime:
    """Returns ``value`` in UTC; a naive datetime is an error (its time zone would be a guess)."""
    if not isinstance(value, dt.datetime):
        raise invalid(f"{name} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise invalid(f"{name} must be timezone-aware (like datetime.now(UTC)), got {value.isoformat()}")
    return value.astimezone(UTC)


def format_timestamp(value: dt.datetime) -> str:
    """RFC 3339 in UTC with microseconds, e.g. ``2026-11-21T10:00:00.000000Z``."""
    return check_aware("timestamp", value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_timestamp(text: str) -> dt.datetime:
    """Reads an RFC 3339 timestamp (``Z`` or offset, up to nanoseconds) as an aware UTC datetime."""
    trimmed = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    parsed = dt.datetime.fromisoformat(trimmed.replace("z", "Z"))
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {text!r}")
    return parsed.astimezone(UTC)


def _seconds(name: str, value: dt.timedelta | float) -> dt.timedelta:
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return dt.timedelta(seconds=value)
    raise invalid(f"{name} must be a timedelta or a number of seconds, got {value!r}")


def format_duration(value: dt.timedelta) -> str:
    """A proto3 JSON Duration with 0, 3 or 6 fractional digits, e.g. ``"0.100s"`` or ``"600s"``."""
    micros = (value.days * 86400 + value.seconds) * 1_000_000 + value.microseconds
    seconds, fraction = divmod(abs(micros), 1_000_000)
    sign = "-" if micros < 0 else ""
    if not fraction:
        return f"{sign}{seconds}s"
    digits = f"{fraction:06d}"
    return f"{sign}{seconds}.{digits[:3] if digits.endswith('000') else digits}s"


def parse_duration(text: str) -> dt.timedelta:
    """Reads a proto3 JSON Duration such as ``"0.100s"``."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r}")
    whole = int(match.group(1))
    nanos = int((match.group(2) or "0").ljust(9, "0"))
    sign = -1 if match.group(1).startswith("-") else 1
    return dt.timedelta(seconds=whole, microseconds=sign * (nanos // 1000))


# -- tasks --------------------------------------------------------------------------------------------


def _body(json: Any, body: bytes | str | None, headers: dict[str, str]) -> bytes | None:
    if json is not None and body is not None:
        raise invalid("pass either json= or body=, not both")
    if json is not None:
        try:
            encoded = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise invalid(f"json is not JSON-serializable: {exc}") from exc
        if not any(key.lower() == "content-type" for key in headers):
            headers["Content-Type"] = "application/json"
        return encoded.encode("utf-8")
    if isinstance(body, str):
        return body.encode("utf-8")
    if body is not None and not isinstance(body, bytes | bytearray):
        raise invalid(f"body must be bytes or str, got {type(body).__name__}")
    return None if body is None else bytes(body)


def _schedule(
    delay: dt.timedelta | None, schedule_time: dt.datetime | None, now: dt.datetime
) -> dt.datetime | None:
    if delay is not None and schedule_time is not None:
        raise invalid("pass either delay= or schedule_time=, not both")
    if schedule_time is not None:
        return check_aware("schedule_time", schedule_time)
    if delay is None:
        return None
    if not isinstance(delay, dt.timedelta) or delay < dt.timedelta(0):
        raise invalid(f"delay must be a timedelta >= 0, got {delay!r}")
    return check_aware("now", now) + delay


def _task_name(parent: str, name: str | None, dedup_key: str | None) -> str | None:
    if name is not None and dedup_key is not None:
        raise invalid("pass either name= or dedup_key=, not both")
    if dedup_key is not None:
        return f"{parent}/tasks/{task_id_for_key(dedup_key)}"
    return None if name is None else f"{parent}/tasks/{check_task_id(name)}"


def _deadline(value: dt.timedelta | None) -> str | None:
    if value is None:
        return None
    if not isinstance(value, dt.timedelta) or not MIN_DISPATCH_DEADLINE <= value <= MAX_DISPATCH_DEADLINE:
        raise invalid(f"dispatch_deadline must be a timedelta between 15 s and 30 min, got {value!r}")
    return format_duration(value)


def build_task(
    parent: str,
    *,
    url: str,
    now: dt.datetime,
    json: Any = None,
    body: bytes | str | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
    name: str | None = None,
    dedup_key: str | None = None,
    delay: dt.timedelta | None = None,
    schedule_time: dt.datetime | None = None,
    dispatch_deadline: dt.timedelta | None = None,
    service_account: str | None = None,
    audience: str | None = None,
) -> dict[str, Any]:
    """The ``Task`` JSON for one ``enqueue`` call (see :meth:`tasktoolkit.client.TasksClient.enqueue`).

    Raises:
        InvalidArgument: An option is invalid; the message names it and what is allowed.
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url) > MAX_URL_LENGTH:
        raise invalid(f"url must be an http(s):// URL of at most {MAX_URL_LENGTH} chars, got {url!r}")
    verb = method.upper() if isinstance(method, str) else method
    if verb not in HTTP_METHODS:
        raise invalid(f"method must be one of {', '.join(HTTP_METHODS)}, got {method!r}")
    header_map = dict(headers or {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in header_map.items()):
        raise invalid("headers must map strings to strings")
    payload = _body(json, body, header_map)
    if payload is not None and verb not in BODY_METHODS:
        raise invalid(f"a body can be sent only with POST, PUT or PATCH, not {verb}")
    request: dict[str, Any] = {"url": url, "httpMethod": verb}
    if header_map:
        request["headers"] = header_map
    if payload:
        request["body"] = base64.b64encode(payload).decode("ascii")
    if service_account is not None:
        request["oidcToken"] = {"serviceAccountEmail": service_account}
        if audience is not None:
            request["oidcToken"]["audience"] = audience
    elif audience is not None:
        raise invalid("audience needs service_account: it is the audience of that account's OIDC token")
    task: dict[str, Any] = {"httpRequest": request}
    task_name = _task_name(parent, name, dedup_key)
    if task_name is not None:
        task["name"] = task_name
    when = _schedule(delay, schedule_time, now)
    if when is not None:
        task["scheduleTime"] = format_timestamp(when)
    deadline = _deadline(dispatch_deadline)
    if deadline is not None:
        task["dispatchDeadline"] = deadline
    return task


class TaskNameParts:
    """The parts of a full task name ``projects/P/locations/L/queues/Q/tasks/T``."""

    name: str

    @property
    def id(self) -> str:
        """The short task id (what handlers see in ``X-CloudTasks-TaskName``)."""
        _, _, task_id = self.name.rpartition("/tasks/")
        return task_id

    @property
    def queue_path(self) -> str:
        """The full name of the task's queue: ``projects/P/locations/L/queues/Q``."""
        queue_path, _, _ = self.name.rpartition("/tasks/")
        return queue_path

    @property
    def queue(self) -> str:
        """The short queue id."""
        return self.queue_path.rpartition("/")[2]


@dataclass(frozen=True)
class CreatedTask(TaskNameParts):
    """A task as Cloud Tasks returned it."""

    #: Full name ``projects/P/locations/L/queues/Q/tasks/T``.
    name: str
    schedule_time: dt.datetime
    create_time: dt.datetime | None = None
    dispatch_deadline: dt.timedelta | None = None
    dispatch_count: int = 0
    response_count: int = 0
    url: str | None = None
    http_method: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CreatedTask:
        """Reads a ``Task`` resource."""
        request = data.get("httpRequest") or {}
        deadline = data.get("dispatchDeadline")
        created = data.get("createTime")
        return cls(
            name=str(data["name"]),
            schedule_time=parse_timestamp(str(data["scheduleTime"])),
            create_time=parse_timestamp(str(created)) if created else None,
            dispatch_deadline=parse_duration(str(deadline)) if deadline else None,
            dispatch_count=int(data.get("dispatchCount", 0)),
            response_count=int(data.get("responseCount", 0)),
            url=request.get("url"),
            http_method=request.get("httpMethod"),
            raw=data,
        )


# -- queues -------------------------------------------------------------------------------------------


def _fields(
    what: str, options: Mapping[str, Any] | None, names: Mapping[str, tuple[str, bool]]
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for key, value in (options or {}).items():
        if key not in names:
            raise invalid(f"{what} has no field {key!r}; allowed: {', '.join(names)}")
        rest_name, is_duration = names[key]
        if is_duration:
            body[rest_name] = format_duration(_seconds(f"{what}.{key}", value))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            body[rest_name] = value
        else:
            raise invalid(f"{what}.{key} must be a number, got {value!r}")
    return body


def queue_update(
    rate_limits: Mapping[str, Any] | None, retry_config: Mapping[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    """The ``Queue`` JSON and the ``updateMask`` paths for ``ensure_queue``'s options."""
    rates = _fields("rate_limits", rate_limits, RATE_LIMIT_FIELDS)
    retry = _fields("retry_config", retry_config, RETRY_FIELDS)
    queue: dict[str, Any] = {}
    if rates:
        queue["rateLimits"] = rates
    if retry:
        queue["retryConfig"] = retry
    mask = [f"rateLimits.{key}" for key in rates] + [f"retryConfig.{key}" for key in retry]
    return queue, mask


@dataclass(frozen=True)
class QueueInfo:
    """A queue as Cloud Tasks returned it (``rate_limits`` and ``retry_config`` keep the REST names)."""

    name: str
    state: str
    rate_limits: Mapping[str, Any]
    retry_config: Mapping[str, Any]
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def id(self) -> str:
        """The short queue id."""
        return self.name.rpartition("/")[2]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QueueInfo:
        """Reads a ``Queue`` resource."""
        return cls(
            name=str(data["name"]),
            state=str(data.get("state", "RUNNING")),
            rate_limits=dict(data.get("rateLimits") or {}),
            retry_config=dict(data.get("retryConfig") or {}),
            raw=data,
        )
