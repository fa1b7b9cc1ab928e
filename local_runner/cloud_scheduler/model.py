"""Cloud Scheduler v1 jobs: the resource, its defaults and limits, and proto3 JSON in and out.

Field meanings, defaults and limits are those of ``google/cloud/scheduler/v1/job.proto`` and
``target.proto`` (googleapis); each is cited where it is enforced.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import enum
import re
from dataclasses import dataclass
from typing import Any

from local_runner.api.request import camel
from local_runner.cloud_scheduler.cron import check_schedule
from local_runner.codec.scalars import (
    JsonObject,
    format_duration,
    format_timestamp,
    parse_duration,
    parse_timestamp,
    snake,
)
from local_runner.errors import InvalidArgument
from local_runner.model import DEFAULT_OAUTH_SCOPE, OAuthToken, OidcToken, RpcStatus, check_headers

#: ``projects/P/locations/L/jobs/J``; JOB_ID: letters, digits, ``-`` and ``_``, at most 500 (job.proto).
JOB_NAME = re.compile(r"projects/([A-Za-z0-9\-:.]+)/locations/([A-Za-z0-9\-]+)/jobs/([A-Za-z0-9\-_]{1,500})")
#: job.proto ``attempt_deadline``: HTTP targets, default 3 minutes, within [15 s, 30 min].
DEFAULT_ATTEMPT_DEADLINE = 180.0
ATTEMPT_DEADLINE_RANGE = (15.0, 1800.0)
#: job.proto ``description``: at most 500 characters.
MAX_DESCRIPTION = 500
#: job.proto ``RetryConfig.retry_count``: "Values greater than 5 and negative values are not allowed."
MAX_RETRY_COUNT = 5
#: target.proto ``HttpTarget.uri``: at most 2083 characters.
MAX_URI = 2083
#: target.proto ``HttpTarget.headers``: "The total size of headers must be less than 80KB."
MAX_HEADER_BYTES = 80 * 1024
#: target.proto: "A request body is allowed only if the HTTP method is POST, PUT, or PATCH."
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
#: target.proto ``HttpMethod`` by number.
HTTP_METHODS = ("HTTP_METHOD_UNSPECIFIED", "POST", "GET", "HEAD", "PUT", "DELETE", "PATCH", "OPTIONS")
#: Fields a client may write (output-only ones are ignored on input, as the service does).
WRITABLE = (
    "name",
    "description",
    "schedule",
    "timeZone",
    "httpTarget",
    "retryConfig",
    "attemptDeadline",
)
OUTPUT_ONLY = ("userUpdateTime", "state", "status", "scheduleTime", "lastAttemptTime")
UNSUPPORTED_TARGETS = {
    "pubsubTarget": "Pub/Sub targets are not supported by the local runner; use an httpTarget.",
    "appEngineHttpTarget": (
        "App Engine HTTP targets are not supported by the local runner; use an httpTarget."
    ),
}


class JobState(enum.IntEnum):
    """google.cloud.scheduler.v1.Job.State."""

    STATE_UNSPECIFIED = 0
    ENABLED = 1
    PAUSED = 2
    DISABLED = 3
    UPDATE_FAILED = 4


@dataclass(frozen=True)
class JobRetryConfig:
    """job.proto ``RetryConfig`` with its documented defaults (durations in seconds)."""

    retry_count: int = 0
    #: 0: unlimited.
    max_retry_duration: float = 0.0
    min_backoff: float = 5.0
    max_backoff: float = 3600.0
    max_doublings: int = 5


@dataclass(frozen=True)
class JobHttpTarget:
    """target.proto ``HttpTarget``."""

    uri: str
    http_method: str = "POST"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    oidc_token: OidcToken | None = None
    oauth_token: OAuthToken | None = None


@dataclass(frozen=True)
class Execution:
    """The execution in progress: one scheduled (or forced) fire and its attempts so far."""

    #: The fire time (``X-CloudScheduler-ScheduleTime``).
    fire_time: float
    attempts: int = 0
    first_attempt_time: float | None = None


@dataclass(frozen=True)
class Job:
    """A Cloud Scheduler job as the runner keeps it."""

    name: str
    schedule: str
    http_target: JobHttpTarget
    time_zone: str = ""
    description: str = ""
    retry_config: JobRetryConfig = JobRetryConfig()
    attempt_deadline: float = DEFAULT_ATTEMPT_DEADLINE
    state: JobState = JobState.ENABLED
    user_update_time: float = 0.0
    #: The next attempt (a retry, or the next fire of the schedule); ``None`` while not ENABLED.
    schedule_time: float | None = None
    last_attempt_time: float | None = None
    #: The outcome of the last attempt.
    status: RpcStatus | None = None
    #: Runner state: the fire being attempted or retried (never shown by the API).
    execution: Execution | None = None

    def replace(self, **changes: Any) -> Job:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    @property
    def parent(self) -> str:
        """``projects/P/locations/L``."""
        return self.name.rpartition("/jobs/")[0]

    @property
    def job_id(self) -> str:
        """The last part of the name."""
        return self.name.rpartition("/")[2]


# -- JSON in ------------------------------------------------------------------------------------


def _object(value: object, path: str, known: tuple[str, ...]) -> JsonObject:
    if not isinstance(value, dict):
        raise InvalidArgument(f"Invalid value at '{path}': expected an object, got {value!r}")
    out: JsonObject = {}
    for key, item in value.items():
        name = camel(str(key))
        if name not in known:
            raise InvalidArgument(
                f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field."
            )
        if item is not None:
            out[name] = item
    return out


def _string(data: JsonObject, key: str, path: str, default: str = "") -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise InvalidArgument(f"Invalid value at '{path}.{snake(key)}' (TYPE_STRING), {value!r}")
    return value


def _int(data: JsonObject, key: str, path: str, default: int) -> int:
    value = data.get(key, default)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**31) <= value < 2**31:
        raise InvalidArgument(f"Invalid value at '{path}.{snake(key)}' (TYPE_INT32), {value!r}")
    return value


def _duration(data: JsonObject, key: str, path: str, default: float) -> float:
    if key not in data:
        return default
    return parse_duration(data[key], f"{path}.{snake(key)}")


def retry_config_from_json(value: object, path: str = "job.retry_config") -> JobRetryConfig:
    """A ``RetryConfig``; zero or absent fields take the service's defaults (job.proto)."""
    known = ("retryCount", "maxRetryDuration", "minBackoffDuration", "maxBackoffDuration", "maxDoublings")
    data = _object(value, path, known)
    defaults = JobRetryConfig()
    config = JobRetryConfig(
        retry_count=_int(data, "retryCount", path, 0),
        max_retry_duration=_duration(data, "maxRetryDuration", path, 0.0),
        min_backoff=_duration(data, "minBackoffDuration", path, 0.0) or defaults.min_backoff,
        max_backoff=_duration(data, "maxBackoffDuration", path, 0.0) or defaults.max_backoff,
        max_doublings=_int(data, "maxDoublings", path, 0) or defaults.max_doublings,
    )
    if not 0 <= config.retry_count <= MAX_RETRY_COUNT:
        raise InvalidArgument(
            f"{path}.retry_count must be between 0 and {MAX_RETRY_COUNT}, got {config.retry_count}."
        )
    for field_name, seconds in (
        ("max_retry_duration", config.max_retry_duration),
        ("min_backoff_duration", config.min_backoff),
        ("max_backoff_duration", config.max_backoff),
    ):
        if seconds < 0:
            raise InvalidArgument(f"{path}.{field_name} must not be negative.")
    if config.max_doublings < 0:
        raise InvalidArgument(f"{path}.max_doublings must not be negative.")
    if config.min_backoff > config.max_backoff:
        raise InvalidArgument(f"{path}.min_backoff_duration must not exceed {path}.max_backoff_duration.")
    return config


def _token(value: object, path: str, oauth: bool) -> JsonObject:
    known = ("serviceAccountEmail", "scope") if oauth else ("serviceAccountEmail", "audience")
    data = _object(value, path, known)
    if not _string(data, "serviceAccountEmail", path):
        raise InvalidArgument(f"{path}.service_account_email is required.")
    return data


def http_target_from_json(value: object, path: str = "job.http_target") -> JobHttpTarget:
    """An ``HttpTarget``, checked as target.proto describes it."""
    known = ("uri", "httpMethod", "headers", "body", "oidcToken", "oauthToken")
    data = _object(value, path, known)
    uri = _string(data, "uri", path)
    if not uri.startswith(("http://", "https://")):
        raise InvalidArgument(f"{path}.uri must begin with http:// or https://, got {uri!r}.")
    if len(uri) > MAX_URI:
        raise InvalidArgument(f"{path}.uri must be at most {MAX_URI} characters long.")
    method = data.get("httpMethod", "POST")
    if type(method) is int and 0 <= method < len(HTTP_METHODS):
        method = HTTP_METHODS[method]  # a number, as the official clients' REST transport sends enums
    if not isinstance(method, str) or method not in HTTP_METHODS:
        shown = f'"{method}"' if isinstance(method, str) else repr(method)
        raise InvalidArgument(
            f"Invalid value at '{path}.http_method' "
            f"(type.googleapis.com/google.cloud.scheduler.v1.HttpMethod), {shown}"
        )
    method = "POST" if method == "HTTP_METHOD_UNSPECIFIED" else method
    raw_headers = data.get("headers", {})
    if not isinstance(raw_headers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in raw_headers.items()
    ):
        raise InvalidArgument(f"Invalid value at '{path}.headers': expected a map of strings.")
    headers = tuple(raw_headers.items())
    check_headers(headers, f"{path}.headers")
    if sum(len(k.encode()) + len(v.encode()) for k, v in headers) >= MAX_HEADER_BYTES:
        raise InvalidArgument(f"{path}.headers: the total size of headers must be less than 80KB.")
    body_text = _string(data, "body", path)
    try:
        body = base64.b64decode(body_text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgument(
            f"Invalid value at '{path}.body' (TYPE_BYTES), Base64 decoding failed"
        ) from None
    if body and method not in BODY_METHODS:
        raise InvalidArgument(f"{path}.body is allowed only if the HTTP method is POST, PUT or PATCH.")
    oidc = oauth = None
    if "oidcToken" in data and "oauthToken" in data:
        raise InvalidArgument(f"{path}: set at most one of oidc_token and oauth_token.")
    if "oidcToken" in data:
        token = _token(data["oidcToken"], f"{path}.oidc_token", oauth=False)
        oidc = OidcToken(token["serviceAccountEmail"], _string(token, "audience", path))
    if "oauthToken" in data:
        token = _token(data["oauthToken"], f"{path}.oauth_token", oauth=True)
        oauth = OAuthToken(token["serviceAccountEmail"], _string(token, "scope", path) or DEFAULT_OAUTH_SCOPE)
    return JobHttpTarget(uri, method, headers, body, oidc, oauth)


def check_job_name(name: str) -> None:
    """Refuse a name that is not ``projects/P/locations/L/jobs/J`` with a valid JOB_ID (job.proto)."""
    if not JOB_NAME.fullmatch(name):
        raise InvalidArgument(
            f"Job name {name!r} is invalid: it must be "
            "projects/PROJECT_ID/locations/LOCATION_ID/jobs/JOB_ID, "
            "where JOB_ID has 1 to 500 letters, numbers, hyphens or underscores."
        )


def job_fields_from_json(value: object) -> JsonObject:
    """The writable fields of a Job document (lowerCamelCase), output-only ones dropped.

    Raises:
        InvalidArgument: an unknown field, or a Pub/Sub or App Engine target.
    """
    data = _object(value, "job", (*WRITABLE, *OUTPUT_ONLY, *UNSUPPORTED_TARGETS))
    for key, message in UNSUPPORTED_TARGETS.items():
        if key in data:
            raise InvalidArgument(message)
    return {key: item for key, item in data.items() if key in WRITABLE}


def job_from_fields(name: str, data: JsonObject) -> Job:
    """A job from writable fields (see :func:`job_fields_from_json`), validated.

    Raises:
        InvalidArgument: a missing target or schedule, or a field out of its range.
    """
    check_job_name(name)
    if "httpTarget" not in data:
        raise InvalidArgument("A job must have a target: set job.http_target.")
    schedule = _string(data, "schedule", "job")
    if not schedule:
        raise InvalidArgument("job.schedule is required.")
    zone = _string(data, "timeZone", "job")
    check_schedule(schedule, zone)
    description = _string(data, "description", "job")
    if len(description) > MAX_DESCRIPTION:
        raise InvalidArgument(f"job.description must be at most {MAX_DESCRIPTION} characters long.")
    deadline = _duration(data, "attemptDeadline", "job", 0.0) or DEFAULT_ATTEMPT_DEADLINE
    low, high = ATTEMPT_DEADLINE_RANGE
    if not low <= deadline <= high:
        raise InvalidArgument(
            f"job.attempt_deadline must be between {low:g}s and {high:g}s for HTTP targets, "
            f"got {format_duration(deadline)}."
        )
    return Job(
        name=name,
        schedule=schedule,
        time_zone=zone,
        description=description,
        http_target=http_target_from_json(data["httpTarget"]),
        retry_config=retry_config_from_json(data.get("retryConfig", {})),
        attempt_deadline=deadline,
    )


# -- JSON out -----------------------------------------------------------------------------------


def retry_config_to_json(config: JobRetryConfig) -> JsonObject:
    """``RetryConfig`` as the service shows it (every field, defaults included)."""
    out: JsonObject = {
        "maxRetryDuration": format_duration(config.max_retry_duration),
        "minBackoffDuration": format_duration(config.min_backoff),
        "maxBackoffDuration": format_duration(config.max_backoff),
        "maxDoublings": config.max_doublings,
    }
    if config.retry_count:
        out = {"retryCount": config.retry_count, **out}
    return out


def http_target_to_json(target: JobHttpTarget) -> JsonObject:
    """``HttpTarget`` in proto3 JSON."""
    out: JsonObject = {"uri": target.uri, "httpMethod": target.http_method}
    if target.headers:
        out["headers"] = dict(target.headers)
    if target.body:
        out["body"] = base64.b64encode(target.body).decode("ascii")
    if target.oidc_token is not None:
        token: JsonObject = {"serviceAccountEmail": target.oidc_token.service_account_email}
        if target.oidc_token.audience:
            token["audience"] = target.oidc_token.audience
        out["oidcToken"] = token
    if target.oauth_token is not None:
        out["oauthToken"] = {
            "serviceAccountEmail": target.oauth_token.service_account_email,
            "scope": target.oauth_token.scope,
        }
    return out


def job_to_json(job: Job) -> JsonObject:
    """A Job in proto3 JSON, as ``gcloud scheduler jobs describe`` prints it."""
    out: JsonObject = {"name": job.name}
    if job.description:
        out["description"] = job.description
    out["httpTarget"] = http_target_to_json(job.http_target)
    out["schedule"] = job.schedule
    out["timeZone"] = job.time_zone or "Etc/UTC"
    out["userUpdateTime"] = format_timestamp(job.user_update_time)
    out["state"] = job.state.name
    if job.status is not None:
        out["status"] = (
            {} if job.status.code == 0 else {"code": job.status.code, "message": job.status.message}
        )
    if job.schedule_time is not None:
        out["scheduleTime"] = format_timestamp(job.schedule_time)
    if job.last_attempt_time is not None:
        out["lastAttemptTime"] = format_timestamp(job.last_attempt_time)
    out["retryConfig"] = retry_config_to_json(job.retry_config)
    out["attemptDeadline"] = format_duration(job.attempt_deadline)
    return out


# -- storage ------------------------------------------------------------------------------------


def job_to_stored_json(job: Job) -> JsonObject:
    """The API document plus the runner's execution state (what a store keeps)."""
    out = job_to_json(job)
    out["timeZone"] = job.time_zone
    if job.execution is not None:
        execution = job.execution
        out["execution"] = {
            "fireTime": execution.fire_time,
            "attempts": execution.attempts,
            "firstAttemptTime": execution.first_attempt_time,
        }
    if job.status is not None:
        out["status"] = {"code": job.status.code, "message": job.status.message}
    return out


def job_from_stored_json(data: JsonObject) -> Job:
    """The inverse of :func:`job_to_stored_json`."""
    fields = {key: data[key] for key in WRITABLE if key in data}
    job = job_from_fields(data["name"], fields)
    status = data.get("status")
    execution = data.get("execution")

    def instant(key: str) -> float | None:
        return parse_timestamp(data[key], key) if key in data else None

    return job.replace(
        state=JobState[data["state"]],
        user_update_time=parse_timestamp(data["userUpdateTime"], "userUpdateTime"),
        schedule_time=instant("scheduleTime"),
        last_attempt_time=instant("lastAttemptTime"),
        status=None if status is None else RpcStatus(int(status["code"]), str(status["message"])),
        execution=None
        if execution is None
        else Execution(execution["fireTime"], execution["attempts"], execution["firstAttemptTime"]),
    )
