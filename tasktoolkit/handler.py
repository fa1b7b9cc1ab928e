"""@task_handler: verify -> context -> claim -> run -> complete/release -> HTTP answer (design.md §5).

The cycle is shared by every kind of caller: a :class:`Caller` says how a request becomes a context, what
the context's dedup key is and how the user's function is called. Task deliveries are :data:`TASKS`;
Cloud Scheduler fires (``tasktoolkit.scheduled``) bring their own.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload
from urllib.parse import quote

from flask import Flask, Request, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from tasktoolkit import logging_json
from tasktoolkit.answers import RecordEffect, Situation
from tasktoolkit.dedup.base import DedupRecord, DedupStatus, StoredResponse
from tasktoolkit.enqueue import enqueue_route
from tasktoolkit.errors import (
    CallerNotAllowed,
    CertificateFetchError,
    ConfigurationError,
    DedupStoreUnavailable,
    InvalidTaskRequest,
    PermanentFailure,
    RetryTask,
    TaskToolkitError,
    TokenVerificationError,
)
from tasktoolkit.extension import TaskToolkit, ToolkitState
from tasktoolkit.headers import (
    ETA,
    EXECUTION_COUNT,
    PREVIOUS_RESPONSE,
    QUEUE_NAME,
    RETRY_COUNT,
    RETRY_REASON,
    TASK_NAME,
    TaskContext,
    task_context,
)
from tasktoolkit.routes import remember
from tasktoolkit.spans import consumer_span
from tasktoolkit.taskspec import CreatedTask, check_queue_id

log = logging.getLogger("tasktoolkit")

#: ``Retry-After`` when the dedup store or the certificate endpoint is down.
UNAVAILABLE_RETRY_AFTER_S = 10
#: Cap of ``Retry-After`` for a duplicate that arrives while the first delivery runs.
IN_PROGRESS_RETRY_AFTER_MAX_S = 30
#: Longest dedup key accepted from a ``dedup_key`` callable.
MAX_KEY_LENGTH = 1024
#: Longest ``dedup_scope``.
MAX_SCOPE_LENGTH = 200
#: Header set on a replayed response.
REPLAYED_HEADER = Situation.DUPLICATE_DONE.answer.headers[0]
#: WSGI environ key of a list that collects the exceptions a task function raised (the fake queue sets it).
EXCEPTION_SINK_KEY = "tasktoolkit.exception_sink"
#: WSGI environ key of the situation of the answer made last (read back for the delivery's log line).
_SITUATION_KEY = "tasktoolkit.situation"

DedupKey = Callable[[Any, TaskContext], str]
TaskFunction = Callable[..., ResponseReturnValue]
#: A request's context: a :class:`TaskContext`, a ``ScheduleContext``...
C = TypeVar("C")


def default_dedup_key(payload: Any, task: TaskContext) -> str:
    """``queue/task-name``: stable across redeliveries and retries of one task (stored per handler)."""
    return f"{task.queue_name}/{task.task_name}"


def store_key(scope: str, key: str) -> str:
    """The key a handler's record is stored under: ``<scope>|<key>``.

    The scope is the handler's Flask endpoint (or its ``dedup_scope``), percent-encoded so that the first
    ``|`` always ends it: two different (scope, key) pairs never share a record.
    """
    return f"{_quoted(scope)}|{key}"


@functools.lru_cache(maxsize=1024)
def _quoted(scope: str) -> str:
    """``scope`` percent-encoded; a handler's scope is the same on every delivery, so it is encoded once."""
    return quote(scope, safe="")


@dataclass(frozen=True)
class HandlerOptions:
    """Validated options of one :func:`task_handler` (or ``scheduled_handler``)."""

    #: A task handler's key function; ``None`` turns its dedup off. Each :class:`Caller` says whether
    #: it deduplicates and how it keys a request (scheduled handlers: always, by the fire, without it).
    dedup_key: DedupKey | None
    lease_s: float | None
    ttl_s: float | None
    parse_json: bool
    queue: str | None = None
    #: Key space shared by the handlers that name it; ``None``: the handler's own (its Flask endpoint).
    dedup_scope: str | None = None
    #: Shortest lease when ``lease_s`` is ``None``: the app's ``TASKTOOLKIT_LEASE_S`` is raised to it.
    min_lease_s: float = 0.0

    def lease(self, app_lease_s: float) -> float:
        """The lease of a claim: ``lease_s``, else the app's lease raised to :attr:`min_lease_s`."""
        return self.lease_s or max(app_lease_s, self.min_lease_s)


@dataclass(frozen=True)
class Caller(Generic[C]):
    """What depends on who calls a handler.

    The rest of the cycle (verification, the answer table, claim and record, logs and spans) is the same
    for every caller.
    """

    #: The headers the context is built from (any case).
    header_names: tuple[str, ...]
    #: ``(headers in lower case, body, options) -> context``; raises InvalidTaskRequest naming a header.
    parse: Callable[[Mapping[str, str], bytes, HandlerOptions], C]
    #: ``options -> bool``: whether the handler's requests are claimed and recorded under a dedup key.
    deduplicates: Callable[[HandlerOptions], bool]
    #: ``(options, context) -> key``: the context's dedup key within the handler's scope.
    key: Callable[[HandlerOptions, C], str]
    #: ``(function, context, view_args) -> answer``: calls the user's function.
    call: Callable[[TaskFunction, C, dict[str, Any]], ResponseReturnValue]
    #: ``context -> "task emails/welcome-1"``: how log lines name the request.
    label: Callable[[C], str]
    #: ``context -> fields`` of the delivery's log line (:class:`logging_json.DeliveryLog`).
    log_fields: Callable[[C], dict[str, Any]]
    #: ``context -> (span name, destination, message id)``.
    span: Callable[[C], tuple[str, str, str]]

    @functools.cached_property
    def environ_keys(self) -> tuple[tuple[str, str], ...]:
        """``(header name in lower case, WSGI environ key)`` of :attr:`header_names`."""
        return tuple((name.lower(), "HTTP_" + name.upper().replace("-", "_")) for name in self.header_names)


def _json(situation: Situation, body: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """The answer the table gives ``situation``, with this JSON body and the values of its headers."""
    answer = situation.answer
    assert answer.status is not None and tuple(headers or ()) == answer.headers, situation
    request.environ[_SITUATION_KEY] = situation
    response = jsonify(body)
    response.status_code = answer.status
    response.headers.update(headers or {})
    return response


def _retry_after(situation: Situation, message: str, seconds: float) -> Response:
    return _json(situation, {"error": message}, {"Retry-After": str(max(1, math.ceil(seconds)))})


def _acknowledge(situation: Situation, outcome: str) -> Response:
    return _json(situation, {"acknowledged": True, "outcome": outcome})


def _stored(response: Response) -> StoredResponse:
    response.direct_passthrough = False
    return StoredResponse(response.status_code, response.get_data(), response.headers.get("Content-Type"))


def _replay(stored: StoredResponse) -> Response:
    request.environ[_SITUATION_KEY] = Situation.DUPLICATE_DONE
    response = Response(stored.body, status=stored.status)
    if stored.content_type is not None:
        response.headers["Content-Type"] = stored.content_type
    response.headers[REPLAYED_HEADER] = "true"
    return response


def _task_label(task: TaskContext) -> str:
    return f"task {task.queue_name}/{task.task_name}"


#: Cloud Tasks deliveries: ``func(payload, task, **view_args)``, keyed by the handler's ``dedup_key``.
TASKS: Caller[TaskContext] = Caller(
    header_names=(QUEUE_NAME, TASK_NAME, RETRY_COUNT, EXECUTION_COUNT, ETA, PREVIOUS_RESPONSE, RETRY_REASON),
    parse=lambda headers, body, options: task_context(headers, body, parse_json=options.parse_json),
    deduplicates=lambda options: options.dedup_key is not None,
    key=lambda options, task: options.dedup_key(task.payload, task) if options.dedup_key else "",
    call=lambda func, task, view_args: func(task.payload, task, **view_args),
    label=_task_label,
    log_fields=lambda task: {
        "queue": task.queue_name,
        "task": task.task_name,
        "retry_count": task.retry_count,
        "execution_count": task.execution_count,
    },
    span=lambda task: (f"process {task.queue_name}", task.queue_name, task.task_name),
)


def _caller_headers(caller: Caller[Any], environ: dict[str, Any]) -> dict[str, str]:
    """The caller's headers of the request, names in lower case, read straight from the environ."""
    return {name: value for name, key in caller.environ_keys if (value := environ.get(key)) is not None}


def _bearer_token(environ: dict[str, Any]) -> str | None:
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def _admit(caller: Caller[C], options: HandlerOptions, state: ToolkitState, req: Request) -> C | Response:
    """Verifies the caller and parses its context, or returns the rejection."""
    environ = req.environ
    token = _bearer_token(environ)
    if token is None:
        log.warning("rejected request to %s: missing bearer token", req.path)
        return _json(Situation.BAD_TOKEN, {"error": "missing bearer token"}, {"WWW-Authenticate": "Bearer"})
    extra = (req.url, req.base_url) if state.audience_from_request else ()
    try:
        verified = state.verifier.verify(token, extra_audiences=extra)
        context = caller.parse(_caller_headers(caller, environ), req.get_data(), options)
    except TokenVerificationError as exc:
        log.warning("rejected request to %s: %s", req.path, exc)
        return _json(
            Situation.BAD_TOKEN, {"error": str(exc)}, {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        )
    except CallerNotAllowed as exc:
        log.warning("rejected request to %s: %s", req.path, exc)
        return _json(Situation.CALLER_NOT_ALLOWED, {"error": str(exc)})
    except CertificateFetchError as exc:
        log.error("cannot verify request to %s: %s", req.path, exc)
        return _retry_after(
            Situation.CERTS_UNAVAILABLE, "token verification unavailable", UNAVAILABLE_RETRY_AFTER_S
        )
    except InvalidTaskRequest as exc:
        log.warning("rejected request to %s: %s", req.path, exc)
        return _json(Situation.BAD_TASK_REQUEST, {"error": str(exc)})
    if log.isEnabledFor(logging.DEBUG):
        log.debug("%s from %s", caller.label(context), verified.email)
    return context


def _report(exc: Exception) -> None:
    """Hands an exception to a test harness that asked for it (production requests have no sink)."""
    sink = request.environ.get(EXCEPTION_SINK_KEY)
    if isinstance(sink, list):
        sink.append(exc)


def _execute(
    caller: Caller[C], func: TaskFunction, context: C, view_args: dict[str, Any], app: Flask
) -> tuple[Response | HTTPException, Situation]:
    """Runs the user's function and returns its answer and how it ended (a row of the answer table)."""
    try:
        response = app.make_response(caller.call(func, context, view_args))
    except RetryTask as exc:
        log.debug("%s asked to be retried in %gs", caller.label(context), exc.delay_s)
        return _retry_after(
            Situation.RETRY_REQUESTED, "retry requested", exc.delay_s
        ), Situation.RETRY_REQUESTED
    except PermanentFailure as exc:
        log.warning("%s failed permanently: %s", caller.label(context), exc)
        return _acknowledge(Situation.PERMANENT_FAILURE, "permanent_failure"), Situation.PERMANENT_FAILURE
    except HTTPException as exc:
        return exc, Situation.HTTP_EXCEPTION
    except Exception as exc:
        log.exception("%s raised", caller.label(context))
        _report(exc)
        return _json(Situation.HANDLER_RAISED, {"error": "task handler failed"}), Situation.HANDLER_RAISED
    returned = Situation.RETURNED_2XX if 200 <= response.status_code < 300 else Situation.RETURNED_OTHER
    return response, returned


def _duplicate(
    record: DedupRecord, fingerprint: str, state: ToolkitState, caller: Caller[C], context: C
) -> Response:
    if record.fingerprint != fingerprint:
        log.error(
            "dedup key %r reused with a different payload (%s): acknowledged without running",
            record.key,
            caller.label(context),
        )
        return _acknowledge(Situation.PAYLOAD_MISMATCH, "payload_mismatch")
    if record.status is DedupStatus.IN_PROGRESS:
        remaining = record.expires_at - state.store.clock()
        log.debug("dedup key %r is in progress; asking Cloud Tasks to retry", record.key)
        return _retry_after(
            Situation.DUPLICATE_RUNNING,
            "task already in progress",
            min(remaining, IN_PROGRESS_RETRY_AFTER_MAX_S),
        )
    assert record.response is not None, "a finished record stores its response"
    log.debug("dedup key %r is %s; replaying the stored response", record.key, record.status.value.lower())
    return _replay(record.response)


#: The store operation of each effect a run can have on its own claim, as the log names it.
_VERBS = {RecordEffect.COMPLETED: "complete", RecordEffect.FAILED: "fail", RecordEffect.RELEASED: "release"}


def _record(
    state: ToolkitState, claim: DedupRecord, effect: RecordEffect, stored: StoredResponse | None, ttl_s: float
) -> None:
    """Completes, fails or releases the claim; a store failure here is logged and never changes the answer."""
    try:
        if effect is RecordEffect.RELEASED or stored is None:
            held = state.store.release(claim)
        elif effect is RecordEffect.FAILED:
            held = state.store.fail(claim, stored, ttl_s=ttl_s)
        else:
            held = state.store.complete(claim, stored, ttl_s=ttl_s)
        if not held:
            log.warning("dedup key %r: lease ended before %s; nothing recorded", claim.key, _VERBS[effect])
    except DedupStoreUnavailable as exc:
        log.error("dedup key %r: cannot %s, claimed until its lease ends: %s", claim.key, _VERBS[effect], exc)


def _scope(options: HandlerOptions, func: TaskFunction, req: Request) -> str:
    """The handler's key space: its ``dedup_scope``, else the endpoint Flask dispatched the request to."""
    if options.dedup_scope is not None:
        return options.dedup_scope
    return req.endpoint or f"{func.__module__}.{func.__qualname__}"


def _claim(
    caller: Caller[C], options: HandlerOptions, state: ToolkitState, context: C, body: bytes, scope: str
) -> DedupRecord | Response:
    """Claims the context's dedup key, or returns the answer when it cannot run now (duplicate, store down).

    ``body`` is the request's: its digest tells a duplicate from a reuse of the key with another payload.
    """
    try:
        user_key = caller.key(options, context)
        if not isinstance(user_key, str) or not 0 < len(user_key) <= MAX_KEY_LENGTH:
            raise TypeError(f"dedup_key must return a str of 1-{MAX_KEY_LENGTH} chars, got {user_key!r}")
        key = store_key(scope, user_key)
    except Exception as exc:
        log.exception("dedup_key failed for %s", caller.label(context))
        _report(exc)
        return _json(Situation.DEDUP_KEY_FAILED, {"error": "task handler failed"})
    fingerprint = hashlib.sha256(body).hexdigest()
    try:
        claim = state.store.claim(key, fingerprint, lease_s=options.lease(state.lease_s))
    except DedupStoreUnavailable as exc:
        log.error("dedup store unavailable; %s not run: %s", caller.label(context), exc)
        return _retry_after(Situation.STORE_UNAVAILABLE, "dedup store unavailable", UNAVAILABLE_RETRY_AFTER_S)
    return claim.record if claim.acquired else _duplicate(claim.record, fingerprint, state, caller, context)


Delivered = tuple[Response | HTTPException, Situation, Any]


def _answered(answer: Response, context: Any) -> Delivered:
    """An answer made before the user's function ran, with the situation :func:`_json` recorded."""
    situation: Situation = request.environ.pop(_SITUATION_KEY)
    return answer, situation, context


def _deliver(
    caller: Caller[C], func: TaskFunction, options: HandlerOptions, view_args: dict[str, Any], req: Request
) -> Delivered:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    state = TaskToolkit.state(app)
    context = _admit(caller, options, state, req)
    if isinstance(context, Response):
        return _answered(context, None)
    claim = (
        _claim(caller, options, state, context, req.get_data(), _scope(options, func, req))
        if caller.deduplicates(options)
        else None
    )
    if isinstance(claim, Response):
        return _answered(claim, context)
    answer, situation = _execute(caller, func, context, view_args, app)
    if claim is not None:
        effect = situation.answer.record
        stored = (
            _stored(answer) if isinstance(answer, Response) and effect is not RecordEffect.RELEASED else None
        )
        _record(state, claim, effect, stored, options.ttl_s or state.ttl_s)
    return answer, situation, context


def _status(response: Response | HTTPException) -> int:
    return response.status_code if isinstance(response, Response) else response.code or 500


def _log_delivery(
    caller: Caller[Any],
    answer: Delivered,
    status: int,
    started: float,
    clock: Callable[[], float],
    dedup: bool,
    path: str,
) -> None:
    _, situation, context = answer
    if not logging_json.delivery_logged(situation, status):
        return
    logging_json.log_delivery(
        logging_json.DeliveryLog(
            situation=situation,
            status=status,
            latency_s=clock() - started,
            path=path,
            dedup=logging_json.dedup_outcome(situation, dedup),
            **(caller.log_fields(context) if context is not None else {}),
        )
    )


def dispatch(
    caller: Caller[C], func: TaskFunction, options: HandlerOptions, view_args: dict[str, Any]
) -> ResponseReturnValue:
    """Handles one request to a handler of ``caller``'s kind: the whole cycle, logged and traced."""
    clock = logging_json.clock
    started = clock()
    # The request behind Flask's proxy, looked up once: each use of the proxy costs a context lookup.
    req: Request = request._get_current_object()  # type: ignore[attr-defined]
    environ = req.environ
    with consumer_span(environ) as span:
        answer = _deliver(caller, func, options, view_args, req)
        environ.pop(_SITUATION_KEY, None)
        response, situation, context = answer
        status = _status(response)
        _log_delivery(caller, answer, status, started, clock, caller.deduplicates(options), req.path)
        if context is not None and span.recording:
            name, destination, message_id = caller.span(context)
            span.update(name, destination_name=destination, message_id=message_id)
        if status >= 500 or situation is Situation.PAYLOAD_MISMATCH:
            span.failed(situation.name.lower())
    if isinstance(response, HTTPException):
        raise response  # Flask renders it, through the app's error handlers
    return response


class TaskHandler:
    """A Flask view running one task function under verification and dedup (made by :func:`task_handler`)."""

    def __init__(self, func: TaskFunction, options: HandlerOptions) -> None:
        remember(func)
        functools.update_wrapper(self, func)
        self.func = func
        self.options = options

    def __call__(self, **view_args: Any) -> ResponseReturnValue:
        """Handles one delivery (Flask passes the URL's variables as keyword arguments)."""
        return dispatch(TASKS, self.func, self.options, view_args)

    def enqueue(
        self,
        payload: Any = None,
        /,
        *,
        queue: str | None = None,
        route_args: dict[str, Any] | None = None,
        **options: Any,
    ) -> CreatedTask | None:
        """Creates a task that calls this handler, through the app's client (see ``docs/enqueue.md``).

        The URL is ``TASKTOOLKIT_BASE_URL`` plus this route's path; the queue is ``queue``, the decorator's
        ``queue`` or ``TASKTOOLKIT_DEFAULT_QUEUE``; the OIDC token is for ``TASKTOOLKIT_SERVICE_ACCOUNT``
        with the app's audience. Must run inside a request or ``app.app_context()``.

        Args:
            payload: JSON payload (the function's ``payload`` argument).
            queue: Queue id, overriding the decorator's.
            route_args: Values of the route's variables, e.g. ``{"kind": "thumb"}`` for ``/tasks/<kind>``.
            **options: Any :meth:`tasktoolkit.client.TasksClient.enqueue` option (``dedup_key``, ``delay``,
                ``schedule_time``, ``name``, ``dispatch_deadline``, ``headers``, ``ignore_existing``...).

        Returns:
            The created task, or ``None`` for an existing one with ``ignore_existing=True``.

        Raises:
            ConfigurationError: A setting the task needs is missing.
            TaskAlreadyExists: The name or dedup key is taken.
        """
        return enqueue_route(
            self, payload, queue=queue or self.options.queue, route_args=route_args, options=options
        )


def check_duration(decorator: str, name: str, value: float | None) -> float | None:
    """``value`` if it is ``None`` or a number of seconds > 0 (``decorator`` names the option's owner)."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if value is not None and (not number or not math.isfinite(value) or value <= 0):
        raise ConfigurationError(f"{decorator} {name} must be a number of seconds > 0, got {value!r}")
    return value


def _check_key(key: DedupKey | None) -> DedupKey | None:
    if key is not None:
        if not callable(key):
            raise ConfigurationError(
                f"task_handler dedup_key must be a callable(payload, task) or None, got {key!r}"
            )
        try:
            inspect.signature(key).bind(None, None)
        except TypeError as exc:
            raise ConfigurationError(f"task_handler dedup_key must accept (payload, task): {exc}") from exc
        except ValueError:  # pragma: no cover - builtins without a signature
            pass
    return key


def check_scope(decorator: str, scope: str | None) -> str | None:
    """``scope`` if it is ``None`` or a valid ``dedup_scope``."""
    if scope is not None and not (isinstance(scope, str) and 0 < len(scope) <= MAX_SCOPE_LENGTH):
        raise ConfigurationError(
            f"{decorator} dedup_scope must be a str of 1-{MAX_SCOPE_LENGTH} characters or None, got {scope!r}"
        )
    return scope


def check_function(decorator: str, func: TaskFunction, arguments: tuple[str, ...]) -> None:
    """Refuses what ``decorator`` cannot call: not a plain function, or one that cannot take ``arguments``."""
    if not callable(func) or inspect.iscoroutinefunction(func):
        raise ConfigurationError(f"{decorator} needs a plain (non-async) function, got {func!r}")
    try:
        inspect.signature(func).bind_partial(*(None for _ in arguments))
    except TypeError as exc:
        kind = decorator.removesuffix("_handler")
        raise ConfigurationError(
            f"{kind} function {func.__name__} must accept ({', '.join(arguments)}): {exc}"
        ) from exc


@overload
def task_handler(func: TaskFunction, /) -> TaskHandler: ...


@overload
def task_handler(
    *,
    dedup_key: DedupKey | None = ...,
    lease_s: float | None = ...,
    ttl_s: float | None = ...,
    parse_json: bool = ...,
    queue: str | None = ...,
    dedup_scope: str | None = ...,
) -> Callable[[TaskFunction], TaskHandler]: ...


def task_handler(
    func: TaskFunction | None = None,
    /,
    *,
    dedup_key: DedupKey | None = default_dedup_key,
    lease_s: float | None = None,
    ttl_s: float | None = None,
    parse_json: bool = True,
    queue: str | None = None,
    dedup_scope: str | None = None,
) -> TaskHandler | Callable[[TaskFunction], TaskHandler]:
    """Turns a Flask view into a verified, idempotent Cloud Tasks handler.

    The function is called as ``func(payload, task, **view_args)`` where ``payload`` is the JSON body and
    ``task`` the :class:`~tasktoolkit.TaskContext`. Answers follow the table in ``docs/handlers.md``.
    Write it directly above the function, below ``@app.post(...)``; the other order is refused.

    Args:
        func: The task function (when used as a bare ``@task_handler``).
        dedup_key: ``(payload, task) -> str``; default ``"<queue>/<task name>"``; ``None`` turns dedup off.
            The record is stored as ``"<scope>|<key>"`` (see ``dedup_scope``).
        lease_s: How long a claim blocks duplicates while running (default ``TASKTOOLKIT_LEASE_S``).
        ttl_s: How long a result is kept for replay (default ``TASKTOOLKIT_RESULT_TTL_S``).
        parse_json: Parse the body as JSON into ``payload``; when false ``payload`` is ``None``.
        queue: Queue id that :meth:`TaskHandler.enqueue` uses (default ``TASKTOOLKIT_DEFAULT_QUEUE``).
        dedup_scope: Key space of the dedup records; handlers naming the same scope share their keys.
            Default: the handler's own, its Flask endpoint name (e.g. ``"send_welcome_email"``).

    Raises:
        ConfigurationError: An option is invalid (checked when the decorator is applied), or an app that
            :class:`~tasktoolkit.TaskToolkit` initialized already serves the function without the decorator.
    """
    if queue is not None:
        try:
            check_queue_id(queue)
        except TaskToolkitError as exc:
            raise ConfigurationError(f"task_handler {exc}") from exc
    options = HandlerOptions(
        _check_key(dedup_key),
        check_duration("task_handler", "lease_s", lease_s),
        check_duration("task_handler", "ttl_s", ttl_s),
        parse_json,
        queue,
        check_scope("task_handler", dedup_scope),
    )

    def decorate(function: TaskFunction) -> TaskHandler:
        check_function("task_handler", function, ("payload", "task"))
        return TaskHandler(function, options)

    if func is not None:
        return decorate(func)
    return decorate
