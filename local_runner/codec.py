"""Proto3 JSON <-> model, in one place: the REST API, the queue file and the SQLite store all use it.

Output is lowerCamelCase with enums as names (or integers on request), Durations like ``"0.100s"``,
Timestamps RFC 3339 in UTC with 0, 3 or 6 fractional digits, bytes as base64 and int64 as strings.
Input accepts lowerCamelCase and snake_case names, enum names or integers, and RFC 3339 offsets.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from local_runner.errors import InvalidArgument
from local_runner.model import (
    Attempt,
    HttpMethod,
    HttpRequest,
    HttpTarget,
    NewTask,
    OAuthToken,
    OidcToken,
    Queue,
    QueueState,
    RateLimits,
    RetryConfig,
    RpcStatus,
    Task,
    TaskView,
    UriOverride,
    check_headers,
)

JsonObject = dict[str, Any]
E = TypeVar("E", bound=enum.IntEnum)
T = TypeVar("T")

#: google.protobuf.Timestamp's range, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z (whole seconds at the top,
#: so that rounding to microseconds never leaves year 9999).
MIN_TIMESTAMP = -62_135_596_800.0
MAX_TIMESTAMP = 253_402_300_799.0
_DURATION_RE = re.compile(r"(-)?(\d+)(?:\.(\d{1,9}))?s")
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")

# ---------------------------------------------------------------------------------------------
# Scalars
# ---------------------------------------------------------------------------------------------


def epoch_micros(instant: float) -> int:
    """An instant in whole microseconds since 1970, the precision of every time the API shows.

    Parsed instants are whole microseconds already; the nearest one is taken so that a float a little
    under it (seconds since 1970 hold a microsecond only to about 0.2 µs) comes back exactly.
    """
    return math.floor(instant * 1_000_000 + 0.5)


def format_timestamp(instant: float) -> str:
    """RFC 3339 in UTC to the microsecond (:func:`epoch_micros`), with 0, 3 or 6 fractional digits."""
    seconds, frac = divmod(epoch_micros(instant), 1_000_000)
    text = _utc_seconds(seconds)
    if frac == 0:
        return text + "Z"
    if frac % 1000 == 0:
        return f"{text}.{frac // 1000:03d}Z"
    return f"{text}.{frac:06d}Z"


def format_epoch_seconds(instant: float) -> str:
    """Seconds since 1970 with six decimals, the microsecond :func:`format_timestamp` shows."""
    micros = epoch_micros(instant)
    seconds, frac = divmod(abs(micros), 1_000_000)
    return f"{'-' if micros < 0 else ''}{seconds}.{frac:06d}"


@functools.lru_cache(maxsize=4096)
def _utc_seconds(seconds: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS`` in UTC (a task's times fall in few distinct seconds)."""
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def parse_timestamp(text: str, path: str = "timestamp") -> float:
    """Parse an RFC 3339 timestamp (any offset) into epoch seconds, truncated to the microsecond."""
    if not isinstance(text, str) or not _TIMESTAMP_RE.fullmatch(text):
        raise _invalid_value(path, "google.protobuf.Timestamp", text)
    fraction = ""
    head = text
    match = re.search(r"\.(\d+)", text)
    if match:
        fraction = match.group(1)
        head = text[: match.start()] + text[match.end() :]
    try:
        parsed = datetime.fromisoformat(head.replace("z", "Z").replace("t", "T").replace("Z", "+00:00"))
    except ValueError:
        raise _invalid_value(path, "google.protobuf.Timestamp", text) from None
    # Truncated to the microsecond, as task.proto says of the Timestamps the service keeps: ".999999999"
    # stays in its second (rounding would carry it into the next).
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    instant = parsed.timestamp() + micros / 1_000_000
    if not MIN_TIMESTAMP <= instant <= MAX_TIMESTAMP:  # google.protobuf.Timestamp's range
        raise _invalid_value(path, "google.protobuf.Timestamp", text)
    return instant


def format_duration(seconds: float) -> str:
    """A proto3 JSON Duration: ``"600s"``, ``"0.100s"``, ``"1.000500s"``."""
    nanos = round(seconds * 1_000_000_000)
    sign = "-" if nanos < 0 else ""
    whole, frac = divmod(abs(nanos), 1_000_000_000)
    if frac == 0:
        return f"{sign}{whole}s"
    if frac % 1_000_000 == 0:
        return f"{sign}{whole}.{frac // 1_000_000:03d}s"
    if frac % 1000 == 0:
        return f"{sign}{whole}.{frac // 1000:06d}s"
    return f"{sign}{whole}.{frac:09d}s"


def parse_duration(text: object, path: str = "duration") -> float:
    """Parse a Duration like ``"0.5s"`` into seconds."""
    match = _DURATION_RE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise _invalid_value(path, "google.protobuf.Duration", text)
    value = int(match.group(2)) + (int((match.group(3) or "0").ljust(9, "0")) / 1e9)
    if value > MAX_DURATION_SECONDS:
        raise _invalid_value(path, "google.protobuf.Duration", text)
    return -value if match.group(1) else value


def _invalid_value(path: str, type_name: str, value: object) -> InvalidArgument:
    return InvalidArgument(f"Invalid value at '{path}' ({type_name}), {_show(value)}")


def _show(value: object) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 80 else text[:77] + "..."


@functools.cache
def snake(name: str) -> str:
    """``pageSize`` -> ``page_size``, as the real service names fields in messages."""
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


@functools.cache
def _aliases(known: tuple[str, ...]) -> dict[str, str]:
    """Each accepted spelling of the fields ``known`` (camelCase and snake_case) to its camelCase."""
    return {name: name for name in known} | {snake(name): name for name in known}


# ---------------------------------------------------------------------------------------------
# A reader that checks names and types and reports the field path on every error
# ---------------------------------------------------------------------------------------------


class _Reader:
    """Reads one JSON object; accepts camelCase and snake_case keys, rejects unknown ones."""

    def __init__(self, data: object, path: str, known: tuple[str, ...]) -> None:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"Invalid value at '{path}': expected an object, got {_show(data)}")
        aliases = _aliases(known)
        self._values: dict[str, object] = {}
        for key, value in data.items():
            canonical = aliases.get(key)
            if canonical is None:
                raise InvalidArgument(
                    f"Invalid JSON payload received. Unknown name \"{key}\" at '{path}': Cannot find field."
                )
            if value is not None:
                self._values[canonical] = value
        self.path = path

    def has(self, key: str) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def _get(self, key: str, check: Callable[[object], T | None], type_name: str) -> T | None:
        if key not in self._values:
            return None
        value = self._values[key]
        result = check(value)
        if result is None:
            raise _invalid_value(f"{self.path}.{snake(key)}", type_name, value)
        return result

    def string(self, key: str) -> str | None:
        return self._get(key, lambda v: v if isinstance(v, str) else None, "TYPE_STRING")

    def number(self, key: str) -> float | None:
        return self._get(key, _as_float, "TYPE_DOUBLE")

    def integer(self, key: str) -> int | None:
        return self._get(key, lambda v: _in_range(_as_int(v), _INT32), "TYPE_INT32")

    def integer64(self, key: str) -> int | None:
        return self._get(key, lambda v: _in_range(_as_int(v), _INT64), "TYPE_INT64")

    def boolean(self, key: str) -> bool | None:
        return self._get(key, lambda v: v if isinstance(v, bool) else None, "TYPE_BOOL")

    def duration(self, key: str) -> float | None:
        if key not in self._values:
            return None
        return parse_duration(self._values[key], f"{self.path}.{snake(key)}")

    def timestamp(self, key: str) -> float | None:
        if key not in self._values:
            return None
        return parse_timestamp(self._values[key], f"{self.path}.{snake(key)}")  # type: ignore[arg-type]

    def enum(self, key: str, kind: type[E]) -> E | None:
        if key not in self._values:
            return None
        value = self._values[key]
        member = _as_enum(value, kind)
        if member is None:
            raise _invalid_value(f"{self.path}.{snake(key)}", f"type.googleapis.com/{kind.__name__}", value)
        return member

    def bytes_(self, key: str) -> bytes | None:
        return self._get(key, decode_bytes, "TYPE_BYTES")

    def message(self, key: str, known: tuple[str, ...]) -> _Reader | None:
        if key not in self._values:
            return None
        return _Reader(self._values[key], f"{self.path}.{snake(key)}", known)

    def string_map(self, key: str) -> dict[str, str] | None:
        return self._get(key, _as_string_map, "map<string, string>")

    def raw(self, key: str) -> object:
        return self._values.get(key)


def _as_float(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
#: The largest google.protobuf.Duration: about 10,000 years.
MAX_DURATION_SECONDS = 315_576_000_000


def _in_range(value: int | None, bounds: tuple[int, int]) -> int | None:
    return value if value is not None and bounds[0] <= value <= bounds[1] else None


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return None


@functools.cache
def _enum_names(kind: type[E]) -> dict[str, E]:
    return dict(kind.__members__)


def _as_enum(value: object, kind: type[E]) -> E | None:
    if isinstance(value, str):
        return _enum_names(kind).get(value)
    number = _as_int(value)
    if number is not None and number in {member.value for member in kind}:
        return kind(number)
    return None


def decode_bytes(value: object) -> bytes | None:
    """Proto3 JSON bytes: standard or URL-safe base64, padding optional (``None`` if not that)."""
    if not isinstance(value, str):
        return None
    text = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def _as_string_map(value: object) -> dict[str, str] | None:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return None
    return dict(value)


def _enum_out(member: enum.IntEnum, int_enums: bool) -> str | int:
    return int(member) if int_enums else member.name


# ---------------------------------------------------------------------------------------------
# Queue
# ---------------------------------------------------------------------------------------------

_QUEUE_FIELDS = (
    "name",
    "appEngineRoutingOverride",
    "httpTarget",
    "rateLimits",
    "retryConfig",
    "state",
    "purgeTime",
    "stackdriverLoggingConfig",
)
_RATE_FIELDS = ("maxDispatchesPerSecond", "maxBurstSize", "maxConcurrentDispatches")
_RETRY_FIELDS = ("maxAttempts", "maxRetryDuration", "minBackoff", "maxBackoff", "maxDoublings")
_TOKEN_OIDC_FIELDS = ("serviceAccountEmail", "audience")
_TOKEN_OAUTH_FIELDS = ("serviceAccountEmail", "scope")


def _or_default(value: T | None, default: T, zero_means_default: bool) -> T:
    if value is None or (zero_means_default and not value):
        return default
    return value


def rate_limits_from_json(reader: _Reader | None, zero_means_default: bool = True) -> RateLimits:
    """RateLimits; an absent field (and, with proto3 semantics, a zero one) takes the default."""
    if reader is None:
        return RateLimits()
    defaults = RateLimits()
    rate = _or_default(
        reader.number("maxDispatchesPerSecond"), defaults.max_dispatches_per_second, zero_means_default
    )
    concurrent = _or_default(
        reader.integer("maxConcurrentDispatches"), defaults.max_concurrent_dispatches, zero_means_default
    )
    reader.integer("maxBurstSize")  # output only: type-checked, then ignored
    return RateLimits(max_dispatches_per_second=rate, max_concurrent_dispatches=concurrent)


def retry_config_from_json(reader: _Reader | None, zero_means_default: bool = True) -> RetryConfig:
    """RetryConfig; absent fields (and, with proto3 semantics, zero scalars) take the default."""
    if reader is None:
        return RetryConfig()
    defaults = RetryConfig()
    min_backoff = reader.duration("minBackoff")
    max_backoff = reader.duration("maxBackoff")
    retry_duration = reader.duration("maxRetryDuration")
    return RetryConfig(
        max_attempts=_or_default(reader.integer("maxAttempts"), defaults.max_attempts, zero_means_default),
        max_retry_duration=retry_duration if retry_duration is not None else defaults.max_retry_duration,
        min_backoff=min_backoff if min_backoff is not None else defaults.min_backoff,
        max_backoff=max_backoff if max_backoff is not None else defaults.max_backoff,
        max_doublings=_or_default(reader.integer("maxDoublings"), defaults.max_doublings, zero_means_default),
    )


def _oidc_from_json(reader: _Reader | None) -> OidcToken | None:
    if reader is None:
        return None
    return OidcToken(reader.string("serviceAccountEmail") or "", reader.string("audience") or "")


def _oauth_from_json(reader: _Reader | None) -> OAuthToken | None:
    if reader is None:
        return None
    scope = reader.string("scope")
    return OAuthToken(reader.string("serviceAccountEmail") or "", scope or OAuthToken("").scope)


#: UriOverride.Scheme and UriOverride.UriOverrideEnforceMode by number; 0 (unspecified) reads as unset.
_SCHEMES = ("", "HTTP", "HTTPS")
_ENFORCE_MODES = ("", "IF_NOT_EXISTS", "ALWAYS")


def _string_enum(reader: _Reader, key: str, names: tuple[str, ...]) -> str | None:
    """An enum kept as its name in the model, given as a name or (as official clients send it) a number."""
    value = reader.raw(key)
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(names):
            raise _invalid_value(f"{reader.path}.{snake(key)}", "TYPE_ENUM", value)
        return names[value]
    return reader.string(key)


def _http_target_from_json(reader: _Reader | None, check: bool) -> HttpTarget | None:
    """Queue-level routing; ``check``: refuse header overrides no HTTP request can carry."""
    if reader is None:
        return None
    uri = reader.message(
        "uriOverride", ("scheme", "host", "port", "pathOverride", "queryOverride", "uriOverrideEnforceMode")
    )
    override = None
    if uri is not None:
        path = uri.message("pathOverride", ("path",))
        query = uri.message("queryOverride", ("queryParams",))
        override = UriOverride(
            scheme=_string_enum(uri, "scheme", _SCHEMES) or "",
            host=uri.string("host") or "",
            port=uri.integer64("port") or 0,
            path=(path.string("path") or "") if path else "",
            query=(query.string("queryParams") or "") if query else "",
            enforce_mode=_string_enum(uri, "uriOverrideEnforceMode", _ENFORCE_MODES) or "ALWAYS",
        )
    headers: list[tuple[str, str]] = []
    raw_overrides = reader.raw("headerOverrides")
    if raw_overrides is not None:
        if not isinstance(raw_overrides, list):
            raise _invalid_value(f"{reader.path}.header_overrides", "HeaderOverride", raw_overrides)
        for index, item in enumerate(raw_overrides):
            entry = _Reader(item, f"{reader.path}.header_overrides[{index}]", ("header",))
            header = entry.message("header", ("key", "value"))
            if header is not None:
                headers.append((header.string("key") or "", header.string("value") or ""))
    if check:
        check_headers(headers, "HttpTarget.headerOverrides")
    return HttpTarget(
        uri_override=override,
        http_method=reader.enum("httpMethod", HttpMethod) or HttpMethod.HTTP_METHOD_UNSPECIFIED,
        header_overrides=tuple(headers),
        oidc_token=_oidc_from_json(reader.message("oidcToken", _TOKEN_OIDC_FIELDS)),
        oauth_token=_oauth_from_json(reader.message("oauthToken", _TOKEN_OAUTH_FIELDS)),
    )


def queue_from_json(data: object, path: str = "queue", zero_means_default: bool = True) -> Queue:
    """A Queue from its JSON form; output-only fields (state, purgeTime, maxBurstSize) are ignored.

    With ``zero_means_default`` (API and queue-file input, proto3 semantics) a zero rate, concurrency,
    attempt count or doubling count takes the default, and a header override no HTTP request can carry
    is refused; the store reads its own documents exactly as they were written.
    """
    reader = _Reader(data, path, _QUEUE_FIELDS)
    logging = reader.message("stackdriverLoggingConfig", ("samplingRatio",))
    reader.message("appEngineRoutingOverride", ("service", "version", "instance", "host"))
    reader.enum("state", QueueState)
    reader.timestamp("purgeTime")
    return Queue(
        name=reader.string("name") or "",
        rate_limits=rate_limits_from_json(reader.message("rateLimits", _RATE_FIELDS), zero_means_default),
        retry_config=retry_config_from_json(reader.message("retryConfig", _RETRY_FIELDS), zero_means_default),
        http_target=_http_target_from_json(
            reader.message(
                "httpTarget", ("uriOverride", "httpMethod", "headerOverrides", "oidcToken", "oauthToken")
            ),
            check=zero_means_default,
        ),
        logging_sampling_ratio=logging.number("samplingRatio") if logging else None,
    )


def queue_state_from_json(data: object) -> QueueState | None:
    """The ``state`` field of a queue document, if any (the queue file may set PAUSED)."""
    if not isinstance(data, Mapping) or data.get("state") is None:
        return None
    state = _as_enum(data["state"], QueueState)
    if state is None:
        raise _invalid_value("queue.state", "State", data["state"])
    return state


def rate_limits_to_json(limits: RateLimits) -> JsonObject:
    """The JSON form of RateLimits, burst size included."""
    return {
        "maxDispatchesPerSecond": limits.max_dispatches_per_second,
        "maxBurstSize": limits.max_burst_size,
        "maxConcurrentDispatches": limits.max_concurrent_dispatches,
    }


def retry_config_to_json(config: RetryConfig) -> JsonObject:
    """The JSON form of RetryConfig; a zero maxRetryDuration (unlimited) is omitted like the service does."""
    out: JsonObject = {"maxAttempts": config.max_attempts}
    if config.max_retry_duration:
        out["maxRetryDuration"] = format_duration(config.max_retry_duration)
    out["minBackoff"] = format_duration(config.min_backoff)
    out["maxBackoff"] = format_duration(config.max_backoff)
    out["maxDoublings"] = config.max_doublings
    return out


def _token_to_json(token: OidcToken | OAuthToken) -> JsonObject:
    if isinstance(token, OidcToken):
        out = {"serviceAccountEmail": token.service_account_email}
        if token.audience:
            out["audience"] = token.audience
        return out
    return {"serviceAccountEmail": token.service_account_email, "scope": token.scope}


def _tokens_to_json(oidc: OidcToken | None, oauth: OAuthToken | None) -> JsonObject:
    out: JsonObject = {}
    if oidc is not None:
        out["oidcToken"] = _token_to_json(oidc)
    if oauth is not None:
        out["oauthToken"] = _token_to_json(oauth)
    return out


def _http_target_to_json(target: HttpTarget, int_enums: bool) -> JsonObject:
    out: JsonObject = {}
    if target.uri_override is not None:
        uri = target.uri_override
        override: JsonObject = {}
        if uri.scheme:
            override["scheme"] = uri.scheme
        if uri.host:
            override["host"] = uri.host
        if uri.port:
            override["port"] = str(uri.port)
        if uri.path:
            override["pathOverride"] = {"path": uri.path}
        if uri.query:
            override["queryOverride"] = {"queryParams": uri.query}
        override["uriOverrideEnforceMode"] = uri.enforce_mode
        out["uriOverride"] = override
    if target.http_method is not HttpMethod.HTTP_METHOD_UNSPECIFIED:
        out["httpMethod"] = _enum_out(target.http_method, int_enums)
    if target.header_overrides:
        out["headerOverrides"] = [{"header": {"key": k, "value": v}} for k, v in target.header_overrides]
    return out | _tokens_to_json(target.oidc_token, target.oauth_token)


def queue_to_json(queue: Queue, int_enums: bool = False) -> JsonObject:
    """The JSON form of a Queue as the real service returns it."""
    out: JsonObject = {
        "name": queue.name,
        "rateLimits": rate_limits_to_json(queue.rate_limits),
        "retryConfig": retry_config_to_json(queue.retry_config),
        "state": _enum_out(queue.state, int_enums),
    }
    if queue.http_target is not None:
        out["httpTarget"] = _http_target_to_json(queue.http_target, int_enums)
    if queue.purge_time is not None:
        out["purgeTime"] = format_timestamp(queue.purge_time)
    if queue.logging_sampling_ratio is not None:
        out["stackdriverLoggingConfig"] = {"samplingRatio": queue.logging_sampling_ratio}
    return out


# ---------------------------------------------------------------------------------------------
# Task
# ---------------------------------------------------------------------------------------------

_TASK_FIELDS = (
    "name",
    "appEngineHttpRequest",
    "httpRequest",
    "scheduleTime",
    "createTime",
    "dispatchDeadline",
    "dispatchCount",
    "responseCount",
    "firstAttempt",
    "lastAttempt",
    "view",
    "retryConfig",
)
_HTTP_REQUEST_FIELDS = ("url", "httpMethod", "headers", "body", "oauthToken", "oidcToken")


def http_request_from_json(data: object, path: str = "task.http_request") -> HttpRequest:
    """An HttpRequest from its JSON form."""
    reader = _Reader(data, path, _HTTP_REQUEST_FIELDS)
    return HttpRequest(
        url=reader.string("url") or "",
        http_method=reader.enum("httpMethod", HttpMethod) or HttpMethod.POST,
        headers=reader.string_map("headers") or {},
        body=reader.bytes_("body") or b"",
        oidc_token=_oidc_from_json(reader.message("oidcToken", _TOKEN_OIDC_FIELDS)),
        oauth_token=_oauth_from_json(reader.message("oauthToken", _TOKEN_OAUTH_FIELDS)),
    )


def new_task_from_json(data: object, path: str = "task") -> NewTask:
    """What a CreateTask body's ``task`` asks for; output-only fields are ignored.

    Headers no HTTP request can carry are refused here, at creation, rather than retried until the
    task's attempts run out (stored tasks are read back by :func:`http_request_from_json`, unchecked).
    """
    reader = _Reader(data, path, _TASK_FIELDS)
    if reader.has("appEngineHttpRequest"):
        raise InvalidArgument("App Engine tasks are not supported by the local runner; use httpRequest.")
    if not reader.has("httpRequest"):
        raise InvalidArgument("Task.payload_type is not set.")
    for output_only in ("createTime", "dispatchCount", "responseCount", "view"):
        reader.raw(output_only)
    retry = reader.message("retryConfig", _RETRY_FIELDS)
    http_request = http_request_from_json(reader.raw("httpRequest"), f"{path}.http_request")
    check_headers(http_request.headers.items(), "HttpRequest.headers")
    return NewTask(
        http_request=http_request,
        name=reader.string("name") or None,
        schedule_time=reader.timestamp("scheduleTime"),
        dispatch_deadline=reader.duration("dispatchDeadline"),
        retry_config=retry_config_from_json(retry) if retry is not None else None,
    )


def http_request_to_json(request: HttpRequest, full: bool = True, int_enums: bool = False) -> JsonObject:
    """The JSON form of an HttpRequest; the body only in the FULL view (as the real service does)."""
    out: JsonObject = {"url": request.url, "httpMethod": _enum_out(request.http_method, int_enums)}
    if request.headers:
        out["headers"] = dict(request.headers)
    if full and request.body:
        out["body"] = base64.b64encode(request.body).decode("ascii")
    return out | _tokens_to_json(request.oidc_token, request.oauth_token)


def attempt_to_json(attempt: Attempt, first: bool = False) -> JsonObject:
    """The JSON form of an Attempt; the first attempt carries only its dispatch time."""
    if first:
        return {"dispatchTime": format_timestamp(attempt.dispatch_time)}
    out: JsonObject = {
        "scheduleTime": format_timestamp(attempt.schedule_time),
        "dispatchTime": format_timestamp(attempt.dispatch_time),
    }
    if attempt.response_time is not None:
        out["responseTime"] = format_timestamp(attempt.response_time)
    if attempt.response_status is not None:
        out["responseStatus"] = {
            "code": attempt.response_status.code,
            "message": attempt.response_status.message,
        }
    return out


def task_to_json(task: Task, view: TaskView = TaskView.BASIC, int_enums: bool = False) -> JsonObject:
    """The JSON form of a Task in the BASIC (no body) or FULL view."""
    view = TaskView.BASIC if view is TaskView.VIEW_UNSPECIFIED else view
    out: JsonObject = {
        "name": task.name,
        "httpRequest": http_request_to_json(task.http_request, view is TaskView.FULL, int_enums),
        "scheduleTime": format_timestamp(task.schedule_time),
        "createTime": format_timestamp(math.floor(task.create_time)),
        "dispatchDeadline": format_duration(task.dispatch_deadline),
    }
    if task.dispatch_count:
        out["dispatchCount"] = task.dispatch_count
    if task.response_count:
        out["responseCount"] = task.response_count
    if task.first_attempt is not None:
        out["firstAttempt"] = attempt_to_json(task.first_attempt, first=True)
    if task.last_attempt is not None:
        out["lastAttempt"] = attempt_to_json(task.last_attempt)
    out["view"] = _enum_out(view, int_enums)
    if task.retry_config is not None:
        out["retryConfig"] = retry_config_to_json(task.retry_config)
    return out


def attempt_from_json(data: object, path: str = "attempt") -> Attempt:
    """An Attempt from the runner's stored form (``attempt_to_json`` plus ``httpStatus``)."""
    reader = _Reader(
        data,
        path,
        ("scheduleTime", "dispatchTime", "responseTime", "responseStatus", "httpStatus", "duplicate"),
    )
    status = reader.message("responseStatus", ("code", "message", "details"))
    duplicate = reader.message("duplicate", ("httpStatus",))
    return Attempt(
        schedule_time=reader.timestamp("scheduleTime") or 0.0,
        dispatch_time=reader.timestamp("dispatchTime") or 0.0,
        response_time=reader.timestamp("responseTime"),
        http_status=reader.integer("httpStatus"),
        response_status=RpcStatus(status.integer("code") or 0, status.string("message") or "")
        if status
        else None,
        duplicated=duplicate is not None,
        duplicate_http_status=duplicate.integer("httpStatus") if duplicate else None,
    )


def attempt_to_stored_json(attempt: Attempt) -> JsonObject:
    """The runner's stored form of an Attempt: the API form plus the handler's HTTP status."""
    out = attempt_to_json(attempt)
    if attempt.http_status is not None:
        out["httpStatus"] = attempt.http_status
    if attempt.duplicated:
        status = attempt.duplicate_http_status
        out["duplicate"] = {} if status is None else {"httpStatus": status}
    return out
