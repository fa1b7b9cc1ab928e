"""Task, HttpRequest and Attempt <-> proto3 JSON, and the runner's stored form of an Attempt.

A task's RetryConfig and tokens are the queue's message types; their codecs are in :mod:`.queues`.
"""

from __future__ import annotations

import base64
import math

from local_runner.codec.queues import (
    RETRY_FIELDS,
    TOKEN_OAUTH_FIELDS,
    TOKEN_OIDC_FIELDS,
    oauth_from_json,
    oidc_from_json,
    retry_config_from_json,
    retry_config_to_json,
    tokens_to_json,
)
from local_runner.codec.reader import Reader
from local_runner.codec.scalars import JsonObject, enum_to_json, format_duration, format_timestamp
from local_runner.errors import InvalidArgument
from local_runner.model import (
    Attempt,
    HttpMethod,
    HttpRequest,
    NewTask,
    RpcStatus,
    Task,
    TaskView,
    check_headers,
)

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
    reader = Reader(data, path, _HTTP_REQUEST_FIELDS)
    return HttpRequest(
        url=reader.string("url") or "",
        http_method=reader.enum("httpMethod", HttpMethod) or HttpMethod.POST,
        headers=reader.string_map("headers") or {},
        body=reader.bytes_("body") or b"",
        oidc_token=oidc_from_json(reader.message("oidcToken", TOKEN_OIDC_FIELDS)),
        oauth_token=oauth_from_json(reader.message("oauthToken", TOKEN_OAUTH_FIELDS)),
    )


def new_task_from_json(data: object, path: str = "task") -> NewTask:
    """What a CreateTask body's ``task`` asks for; output-only fields are ignored.

    Headers no HTTP request can carry are refused here, at creation, rather than retried until the
    task's attempts run out (stored tasks are read back by :func:`http_request_from_json`, unchecked).
    """
    reader = Reader(data, path, _TASK_FIELDS)
    if reader.has("appEngineHttpRequest"):
        raise InvalidArgument("App Engine tasks are not supported by the local runner; use httpRequest.")
    if not reader.has("httpRequest"):
        raise InvalidArgument("Task.payload_type is not set.")
    for output_only in ("createTime", "dispatchCount", "responseCount", "view"):
        reader.raw(output_only)
    retry = reader.message("retryConfig", RETRY_FIELDS)
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
    out: JsonObject = {"url": request.url, "httpMethod": enum_to_json(request.http_method, int_enums)}
    if request.headers:
        out["headers"] = dict(request.headers)
    if full and request.body:
        out["body"] = base64.b64encode(request.body).decode("ascii")
    return out | tokens_to_json(request.oidc_token, request.oauth_token)


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
    out["view"] = enum_to_json(view, int_enums)
    if task.retry_config is not None:
        out["retryConfig"] = retry_config_to_json(task.retry_config)
    return out


def attempt_from_json(data: object, path: str = "attempt") -> Attempt:
    """An Attempt from the runner's stored form (``attempt_to_json`` plus ``httpStatus``)."""
    reader = Reader(
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
