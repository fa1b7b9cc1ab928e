"""Frozen Cloud Tasks resources, their defaults and the real service's validation rules.

Times are floats: seconds since the Unix epoch (UTC) for instants, seconds for durations. Every
constructor validates its fields and raises :class:`InvalidArgument` with the real service's message.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from local_runner.errors import InvalidArgument

# Limits and defaults (reference §2-§3).
MAX_DISPATCHES_PER_SECOND = 500.0
MAX_CONCURRENT_DISPATCHES = 5000
DEFAULT_DISPATCHES_PER_SECOND = 500.0
DEFAULT_CONCURRENT_DISPATCHES = 1000
DEFAULT_MAX_ATTEMPTS = 100
DEFAULT_MIN_BACKOFF = 0.1
DEFAULT_MAX_BACKOFF = 3600.0
DEFAULT_MAX_DOUBLINGS = 16
MIN_DISPATCH_DEADLINE = 15.0
MAX_DISPATCH_DEADLINE = 1800.0
DEFAULT_DISPATCH_DEADLINE = 600.0
MAX_SCHEDULE_AHEAD = 30 * 24 * 3600.0
MAX_URL_LENGTH = 2083
MAX_HEADERS_BYTES = 80 * 1024
#: The real service rejects a task whose stored form exceeds 1 MiB - 7 bytes (reference §3).
MAX_TASK_BYTES = 1024 * 1024 - 7
DEFAULT_OAUTH_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
#: Methods that may carry a body on an HTTP target.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: ``X-CloudTasks-TaskPreviousResponse`` after an attempt that got no response: 504, as the real service
#: sends after a dispatch deadline (reference §5.1). The runner also sends it after an attempt cut short by
#: a crash or shutdown of the runner itself, since it cannot know what the target answered.
NO_RESPONSE_STATUS = 504


class HttpMethod(enum.IntEnum):
    """google.cloud.tasks.v2.HttpMethod."""

    HTTP_METHOD_UNSPECIFIED = 0
    POST = 1
    GET = 2
    HEAD = 3
    PUT = 4
    DELETE = 5
    PATCH = 6
    OPTIONS = 7


class QueueState(enum.IntEnum):
    """google.cloud.tasks.v2.Queue.State."""

    STATE_UNSPECIFIED = 0
    RUNNING = 1
    PAUSED = 2
    DISABLED = 3


class TaskView(enum.IntEnum):
    """google.cloud.tasks.v2.Task.View."""

    VIEW_UNSPECIFIED = 0
    BASIC = 1
    FULL = 2


class TaskState(enum.StrEnum):
    """Where a task stands in the runner (not part of the Cloud Tasks API)."""

    #: Waiting for its schedule time, a token and a concurrency slot.
    QUEUED = "QUEUED"
    #: An attempt is in flight.
    DISPATCHING = "DISPATCHING"
    #: Retries ran out; the real service deletes it, the runner keeps it for inspection and replay.
    EXHAUSTED = "EXHAUSTED"


# ---------------------------------------------------------------------------------------------
# Resource names
# ---------------------------------------------------------------------------------------------

_PROJECT_RE = re.compile(r"[A-Za-z0-9\-:.]+")
_LOCATION_RE = re.compile(r"[A-Za-z0-9\-]+")
_QUEUE_ID_RE = re.compile(r"[A-Za-z0-9\-]{1,100}")
_TASK_ID_RE = re.compile(r"[A-Za-z0-9_\-]{1,500}")
_QUEUE_NAME_FORMAT = (
    'Queue name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>".'
)


class QueueName(NamedTuple):
    """The parts of ``projects/P/locations/L/queues/Q``."""

    project: str
    location: str
    queue_id: str

    @property
    def parent(self) -> str:
        """``projects/P/locations/L``."""
        return f"projects/{self.project}/locations/{self.location}"

    def __str__(self) -> str:
        return f"{self.parent}/queues/{self.queue_id}"


class TaskName(NamedTuple):
    """The parts of ``projects/P/locations/L/queues/Q/tasks/T``."""

    queue: QueueName
    task_id: str

    def __str__(self) -> str:
        return f"{self.queue}/tasks/{self.task_id}"


def parse_location(parent: str) -> tuple[str, str]:
    """Split ``projects/P/locations/L`` into (P, L)."""
    parts = parent.split("/")
    if (
        len(parts) != 4
        or parts[0] != "projects"
        or parts[2] != "locations"
        or not _PROJECT_RE.fullmatch(parts[1])
        or not _LOCATION_RE.fullmatch(parts[3])
    ):
        raise InvalidArgument(
            f'Location must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>"; got "{parent}".'
        )
    return parts[1], parts[3]


@functools.lru_cache(maxsize=1024)  # a runner serves few queues; CreateTask parses its name twice
def parse_queue_name(name: str) -> QueueName:
    """Parse and validate a full queue name."""
    parts = name.split("/")
    if len(parts) != 6 or parts[0] != "projects" or parts[2] != "locations" or parts[4] != "queues":
        raise InvalidArgument(_QUEUE_NAME_FORMAT)
    project, location, queue_id = parts[1], parts[3], parts[5]
    if not (
        _PROJECT_RE.fullmatch(project)
        and _LOCATION_RE.fullmatch(location)
        and _QUEUE_ID_RE.fullmatch(queue_id)
    ):
        raise InvalidArgument(_QUEUE_NAME_FORMAT)
    return QueueName(project, location, queue_id)


def parse_task_name(name: str, parent: str | None = None) -> TaskName:
    """Parse and validate a full task name, optionally checking that it belongs to ``parent``."""
    queue_part, sep, task_id = name.rpartition("/tasks/")
    if not sep:
        raise InvalidArgument(
            'Task name must be formatted: "projects/<PROJECT_ID>/locations/<LOCATION_ID>/queues/<QUEUE_ID>'
            f'/tasks/<TASK_ID>"; got "{name}".'
        )
    queue = parse_queue_name(queue_part)
    if parent is not None and str(queue) != parent:
        raise InvalidArgument(
            f"The queue name from request ('{parent}') must be the same as the queue name in the named task "
            f"('{name}')."
        )
    if not _TASK_ID_RE.fullmatch(task_id):
        raise InvalidArgument(
            f'Task ID "{task_id}" can contain only letters ([A-Za-z]), numbers ([0-9]), hyphens (-), or '
            "underscores (_). Task ID must between 1 and 500 characters."
        )
    return TaskName(queue, task_id)


# ---------------------------------------------------------------------------------------------
# Queue configuration
# ---------------------------------------------------------------------------------------------


def derive_burst_size(max_dispatches_per_second: float) -> int:
    """The bucket size Cloud Tasks picks for a rate (output only; no formula is published).

    Matches both observed pairs, 500/s -> 100 and 5/s -> 10 (reference §3.1): a fifth of a second's
    worth of tokens, at least 10 and at most 100.
    """
    return int(min(100, max(10, math.ceil(max_dispatches_per_second / 5))))


@dataclass(frozen=True)
class RateLimits:
    """How fast a queue dispatches: a token bucket plus a cap on attempts in flight."""

    max_dispatches_per_second: float = DEFAULT_DISPATCHES_PER_SECOND
    max_concurrent_dispatches: int = DEFAULT_CONCURRENT_DISPATCHES

    def __post_init__(self) -> None:
        rate = self.max_dispatches_per_second
        if not math.isfinite(rate) or rate < 0:
            raise InvalidArgument("RateLimits.maxDispatchesPerSecond cannot be negative.")
        if rate > MAX_DISPATCHES_PER_SECOND:
            raise InvalidArgument("RateLimits.maxDispatchesPerSecond must be less than or equal to 500.")
        if self.max_concurrent_dispatches < 0:
            raise InvalidArgument("RateLimits.maxConcurrentDispatches cannot be negative.")
        if self.max_concurrent_dispatches > MAX_CONCURRENT_DISPATCHES:
            raise InvalidArgument("RateLimits.maxConcurrentDispatches must be less than or equal to 5000.")

    @property
    def max_burst_size(self) -> int:
        """The token bucket's size, derived from the rate as the real service does."""
        return derive_burst_size(self.max_dispatches_per_second)


@dataclass(frozen=True)
class RetryConfig:
    """When and how often failed attempts are retried (google.cloud.tasks.v2.RetryConfig)."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_retry_duration: float = 0.0
    min_backoff: float = DEFAULT_MIN_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    max_doublings: int = DEFAULT_MAX_DOUBLINGS

    def __post_init__(self) -> None:
        if self.max_attempts < -1:
            raise InvalidArgument("RetryConfig.maxAttempts must be greater or equal to -1.")
        if self.max_retry_duration < 0:
            raise InvalidArgument("RetryConfig.maxRetryDuration cannot be negative.")
        if self.max_doublings < 0:
            raise InvalidArgument("RetryConfig.maxDoublings cannot be negative.")
        if self.min_backoff < 0:
            raise InvalidArgument("RetryConfig.minBackoff cannot be negative.")
        if self.max_backoff < 0:
            raise InvalidArgument("RetryConfig.maxBackoff cannot be negative.")
        if self.min_backoff > self.max_backoff:
            raise InvalidArgument(
                "RetryConfig.minBackoff must be less than or equal to RetryConfig.maxBackoff."
            )


#: An HTTP header name (an RFC 9110 token), the only kind the dispatcher can write.
_HEADER_NAME_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def is_header_name(name: str) -> bool:
    """Whether ``name`` is an HTTP header name (an RFC 9110 token)."""
    return _HEADER_NAME_RE.fullmatch(name) is not None


def breaks_header_line(value: str) -> bool:
    """Whether a header value holds what would end or split its line (CR, LF) or what servers refuse (NUL)."""
    return "\r" in value or "\n" in value or "\x00" in value


def _quoted(text: str) -> str:
    """``text`` in double quotes with control characters escaped, shortened to stay one readable line."""
    escaped = text.encode("unicode_escape").decode("ascii").replace('"', '\\"')
    return f'"{escaped if len(escaped) <= 60 else escaped[:57] + "..."}"'


def check_headers(headers: Iterable[tuple[str, str]], field_name: str) -> None:
    """Refuse a header no HTTP request can carry, so that it is not retried until its attempts run out.

    Raises:
        InvalidArgument: a name that is not an HTTP token (empty, spaces, ``:``, control or non-ASCII
            characters) or a value holding CR, LF or NUL; the message names the field and the header.
    """
    for name, value in headers:
        if not is_header_name(name):
            raise InvalidArgument(
                f"{field_name}: {_quoted(name)} is not a valid HTTP header name; a name is one or more "
                "letters, digits or !#$%&'*+-.^_`|~ (no spaces, colons or control characters)."
            )
        if breaks_header_line(value):
            raise InvalidArgument(
                f"{field_name}: the value of header {_quoted(name)} contains CR, LF or NUL, which an HTTP "
                f"header value cannot hold; got {_quoted(value)}."
            )


def is_sendable_header(name: str, value: str) -> bool:
    """Whether the header passes :func:`check_headers`."""
    return is_header_name(name) and not breaks_header_line(value)


@dataclass(frozen=True)
class OidcToken:
    """Ask the dispatcher to attach an OIDC ID token for this service account."""

    service_account_email: str
    audience: str = ""


@dataclass(frozen=True)
class OAuthToken:
    """Ask the dispatcher to attach an OAuth access token (meant for ``*.googleapis.com``)."""

    service_account_email: str
    scope: str = DEFAULT_OAUTH_SCOPE


@dataclass(frozen=True)
class UriOverride:
    """Queue-level rewrite of the task URL (HttpTarget.uriOverride)."""

    scheme: str = ""
    host: str = ""
    port: int = 0
    path: str = ""
    query: str = ""
    #: ``ALWAYS`` (default) or ``IF_NOT_EXISTS``.
    enforce_mode: str = "ALWAYS"


@dataclass(frozen=True)
class HttpTarget:
    """Queue-level routing applied to every HTTP task at dispatch time."""

    uri_override: UriOverride | None = None
    http_method: HttpMethod = HttpMethod.HTTP_METHOD_UNSPECIFIED
    header_overrides: tuple[tuple[str, str], ...] = ()
    oidc_token: OidcToken | None = None
    oauth_token: OAuthToken | None = None


@dataclass(frozen=True)
class Queue:
    """A Cloud Tasks queue."""

    name: str
    rate_limits: RateLimits = field(default_factory=RateLimits)
    retry_config: RetryConfig = field(default_factory=RetryConfig)
    state: QueueState = QueueState.RUNNING
    #: Tasks created before this instant were purged; ``None`` if never purged.
    purge_time: float | None = None
    http_target: HttpTarget | None = None
    #: stackdriverLoggingConfig.samplingRatio; stored and echoed, not acted on.
    logging_sampling_ratio: float | None = None

    def __post_init__(self) -> None:
        parse_queue_name(self.name)
        ratio = self.logging_sampling_ratio
        if ratio is not None and not 0.0 <= ratio <= 1.0:
            raise InvalidArgument("StackdriverLoggingConfig.samplingRatio must be between 0.0 and 1.0.")

    def replace(self, **changes: object) -> Queue:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpRequest:
    """The HTTP request a task sends to its handler."""

    url: str
    http_method: HttpMethod = HttpMethod.POST
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    oidc_token: OidcToken | None = None
    oauth_token: OAuthToken | None = None

    def __post_init__(self) -> None:
        if not self.url:
            raise InvalidArgument("HttpRequest.url is required.")
        if not (self.url.startswith("http://") or self.url.startswith("https://")):
            raise InvalidArgument("HttpTarget.url must start with 'http://' or 'https://'.")
        if len(self.url) > MAX_URL_LENGTH:
            raise InvalidArgument(f"HttpRequest.url must be at most {MAX_URL_LENGTH} characters.")
        method = HttpMethod(self.http_method)
        if method is HttpMethod.HTTP_METHOD_UNSPECIFIED:
            object.__setattr__(self, "http_method", HttpMethod.POST)
        elif self.body and method.name not in BODY_METHODS:
            raise InvalidArgument(
                f"HttpRequest.body is only allowed for POST, PUT and PATCH requests; got {method.name}."
            )
        if self.oidc_token is not None and self.oauth_token is not None:
            raise InvalidArgument("HttpRequest may set only one of oauthToken and oidcToken.")
        _check_headers_size(self.headers)

    def with_headers(self, headers: Mapping[str, str]) -> HttpRequest:
        """This request carrying ``headers`` instead; only they are checked (the rest was, when built)."""
        _check_headers_size(headers)
        changed = object.__new__(HttpRequest)
        changed.__dict__.update(self.__dict__, headers=headers)  # frozen: bypasses __setattr__
        return changed


def _check_headers_size(headers: Mapping[str, str]) -> None:
    if sum(len(k) + len(v) for k, v in headers.items()) >= MAX_HEADERS_BYTES:
        raise InvalidArgument("HttpRequest.headers must be less than 80KB in total.")


@dataclass(frozen=True)
class RpcStatus:
    """google.rpc.Status of an attempt's outcome."""

    code: int
    message: str


@dataclass(frozen=True)
class Attempt:
    """One dispatch of a task and its outcome."""

    schedule_time: float
    dispatch_time: float
    response_time: float | None = None
    #: HTTP status the handler answered; ``None`` when no response came (deadline, refused, reset).
    http_status: int | None = None
    response_status: RpcStatus | None = None
    #: Whether the attempt was sent twice on purpose (duplicate-delivery mode); the first answer counts.
    duplicated: bool = False
    #: What the handler answered to the duplicate (``None``: no response, or not duplicated).
    duplicate_http_status: int | None = None


@dataclass(frozen=True)
class Task:
    """A Cloud Tasks HTTP task plus the runner's bookkeeping."""

    name: str
    http_request: HttpRequest
    schedule_time: float
    create_time: float
    dispatch_deadline: float = DEFAULT_DISPATCH_DEADLINE
    dispatch_count: int = 0
    response_count: int = 0
    #: Responses other than 5xx: the value of ``X-CloudTasks-TaskExecutionCount``.
    execution_count: int = 0
    first_attempt: Attempt | None = None
    last_attempt: Attempt | None = None
    #: Task-level override of the queue's retry config (2026 API).
    retry_config: RetryConfig | None = None
    state: TaskState = TaskState.QUEUED
    #: HTTP status of the previous attempt, :data:`NO_RESPONSE_STATUS` after a deadline or an attempt
    #: cut short by the runner stopping: ``X-CloudTasks-TaskPreviousResponse``.
    previous_response: int | None = None
    #: The store's id for this task, never reused by a later task of the same name (0 before insertion).
    uid: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if not MIN_DISPATCH_DEADLINE <= self.dispatch_deadline <= MAX_DISPATCH_DEADLINE:
            raise InvalidArgument(
                "Task.dispatchDeadline must be between 15s and 1800s (30 minutes); "
                f"got {self.dispatch_deadline:g}s."
            )

    @property
    def queue_name(self) -> str:
        """The full name of the task's queue."""
        return self.name.rpartition("/tasks/")[0]

    @property
    def task_id(self) -> str:
        """The short task id (last path segment)."""
        return self.name.rpartition("/tasks/")[2]

    def replace(self, **changes: object) -> Task:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def estimated_task_bytes(task: Task) -> int:
    """Approximate size of the task's stored proto (name, URL, headers, body, token fields)."""
    req = task.http_request
    size = len(task.name) + len(req.url) + len(req.body) + 64
    size += sum(len(k) + len(v) + 4 for k, v in req.headers.items())
    for token in (req.oidc_token, req.oauth_token):
        if token is not None:
            size += sum(len(str(v)) for v in dataclasses.astuple(token))
    return size


@dataclass(frozen=True)
class NewTask:
    """What a CreateTask request asks for; the service fills in names, times and defaults."""

    http_request: HttpRequest
    #: Full task name, or ``None`` for a generated id.
    name: str | None = None
    #: ``None`` (or a past instant) means now.
    schedule_time: float | None = None
    dispatch_deadline: float | None = None
    retry_config: RetryConfig | None = None
