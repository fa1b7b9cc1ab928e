"""The REST API on aiohttp: one view per prefix reads the call and answers from a router, errors as JSON."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping

from aiohttp import web

from local_runner.api import runner_ext
from local_runner.api.errors import (
    INTERNAL_MESSAGE,
    error_answer,
    json_response,
    store_error_status,
)
from local_runner.api.request import SYSTEM_PARAMS, Call, camel, parse_json_object
from local_runner.api.rest import CloudTasksApi
from local_runner.api.routing import Router
from local_runner.codec.scalars import JsonObject
from local_runner.errors import ApiError, Code, InvalidArgument, NotFound, StoreError
from local_runner.service import TasksService

#: Largest request body the API accepts (a task may be up to 1 MiB; JSON and base64 add a third).
MAX_REQUEST_BYTES = 2 * 1024 * 1024
API_PREFIX = "/v2/"
#: Answers 200 ``{"status": "ok"}`` while the runner serves (a container's health check).
HEALTH_PATH = "/healthz"
#: Everything after a prefix, newlines included (``%0A`` in a path must reach the JSON 404, too).
_ANY_TAIL = r"{tail:[\s\S]*}"
#: How far the drain of an oversize body goes before the connection is simply dropped.
_MAX_DRAIN_BYTES = 64 * 1024 * 1024

log = logging.getLogger("local_runner.api")

View = Callable[[web.Request], Awaitable[web.StreamResponse]]


def register(app: web.Application, service: TasksService, test_aids: bool = True) -> Router:
    """Add the REST v2 routes and the runner extensions (``test_aids``: allow reset and replay).

    Returns the ``/v2/`` router, which the gRPC front shares.
    """
    api = CloudTasksApi(service)
    app.router.add_get(HEALTH_PATH, _healthz)
    app.router.add_route("*", API_PREFIX + _ANY_TAIL, make_view(api.router, API_PREFIX))
    app.router.add_route(
        "*",
        runner_ext.PREFIX + _ANY_TAIL,
        make_view(runner_ext.routes(service, test_aids), runner_ext.PREFIX),
    )
    return api.router


async def _healthz(request: web.Request) -> web.StreamResponse:
    return web.json_response({"status": "ok"})


def make_view(router: Router, prefix: str) -> View:
    """One aiohttp view answering every path under ``prefix`` from ``router``, errors as JSON."""

    async def view(request: web.Request) -> web.StreamResponse:
        status, document = await answer(
            router,
            request.method,
            request.path,
            len(prefix),
            request.query.items(),
            lambda: _read_body(request, MAX_REQUEST_BYTES),
        )
        return json_response(document, status)

    return view


async def answer(
    router: Router,
    method: str,
    path: str,
    prefix_length: int,
    query: Iterable[tuple[str, str]],
    read_body: Callable[[], Awaitable[bytes]],
) -> tuple[int, JsonObject]:
    """The HTTP status and JSON document answering one call of ``router`` (errors included).

    Shared by the aiohttp view and :mod:`local_runner.api.lean_http`, so both answer alike.
    """
    try:
        match = router.match(method, path[prefix_length:])
        if match is None:
            raise NotFound(f"The requested URL {path} was not found on this server.")
        call = await read_call(method, query, read_body, match.params, match.route.query)
        result = match.route.handler(call)
        if inspect.isawaitable(result):
            result = await result
        return 200, result
    except ApiError as error:
        return error_answer(error.code, error.message)
    except StoreError as error:
        log.error("%s %s: %s", method, path, error)
        return error_answer(*store_error_status(error))
    except Exception:
        log.exception("%s %s failed", method, path)
        return error_answer(Code.INTERNAL, INTERNAL_MESSAGE)


async def read_call(
    method: str,
    query: Iterable[tuple[str, str]],
    read_body: Callable[[], Awaitable[bytes]],
    params: Mapping[str, str],
    fields: frozenset[str],
) -> Call:
    """Bind the query string to ``fields`` and read the body of a POST, PUT or PATCH.

    Raises:
        InvalidArgument: an unknown query parameter, malformed JSON, or a body over the limit.
    """
    bound: dict[str, str] = {}
    int_enums = False
    for key, value in query:
        if key in ("$alt", "alt"):
            int_enums = "enum-encoding=int" in (part.strip() for part in value.split(";"))
            continue
        if key.startswith("$") or key in SYSTEM_PARAMS:
            continue
        name = camel(key)
        if name not in fields:
            raise InvalidArgument(
                f'Invalid JSON payload received. Unknown name "{key}": Cannot bind query parameter. '
                f"Field '{key}' could not be found in request message."
            )
        bound[name] = value
    body: JsonObject = {}
    if method in ("POST", "PUT", "PATCH"):
        body = parse_json_object(await read_body())
    return Call(params=params, query=bound, body=body, int_enums=int_enums)


async def _read_body(request: web.Request, limit: int) -> bytes:
    too_large = InvalidArgument(f"Request payload size exceeds the limit: {limit} bytes.")
    if request.content_length is not None and request.content_length > limit:
        await _drain(request)
        raise too_large
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        await _drain(request)
        raise too_large from None
    if len(raw) > limit:
        raise too_large
    return raw


async def _drain(request: web.Request) -> None:
    """Read the rest of an oversize body so the client sees the error instead of a reset."""
    drained = 0
    while drained < _MAX_DRAIN_BYTES:
        chunk = await request.content.read(64 * 1024)
        if not chunk:
            return
        drained += len(chunk)
