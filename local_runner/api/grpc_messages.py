"""gRPC messages <-> the REST API's calls and answers, by HTTP-rule transcoding.

A request message becomes its proto3 JSON form (what ``MessageToDict`` writes, by
:func:`~local_runner.api.grpc_request_json.request_json`), is split by the method's HTTP rule into path,
query and body exactly as the REST transport would send it, and is answered by the same REST handler;
the handler's proto3 JSON answer is parsed back into the response message
(:mod:`~local_runner.api.grpc_json`). So the JSON codec stays the one place where
fields become model objects, and both fronts share every check and every error message.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from local_runner.api.grpc_json import parse_answer
from local_runner.api.grpc_methods import PathVariable, RpcMethod
from local_runner.api.grpc_request_json import request_json
from local_runner.codec.scalars import JsonObject, snake
from local_runner.errors import InvalidArgument


class RestCall(NamedTuple):
    """A transcoded request: the path after ``/v2/``, the bound query parameters and the JSON body."""

    path: str
    query: dict[str, str]
    body: JsonObject


def parse_request(method: RpcMethod, raw: bytes) -> Message:
    """The request message from its wire bytes.

    Raises:
        InvalidArgument: the bytes are not a valid serialized request message.
    """
    try:
        return method.request.FromString(raw)
    except (DecodeError, RecursionError, ValueError):
        raise InvalidArgument(
            f"Invalid request: the message is not a valid {method.request.DESCRIPTOR.full_name}."
        ) from None


def to_rest_call(method: RpcMethod, request: Message) -> RestCall:
    """The REST call the REST transport would send for ``request``.

    Raises:
        InvalidArgument: a resource name that does not match the method's pattern, or a field value
            that has no proto3 JSON form (a Timestamp or Duration out of range).
    """
    try:
        document = request_json(request)
    except json_format.SerializeToJsonError as error:
        raise InvalidArgument(f"Invalid value in the request. {error}") from None
    except (KeyError, TypeError) as error:  # an ``Any`` of a type no descriptor pool knows
        raise InvalidArgument(f"Invalid value in the request: {error}.") from None
    path = method.path
    for variable in method.variables:
        value = _take(document, variable.field)
        if not isinstance(value, str) or not variable.regex.fullmatch(value):
            raise _bad_resource(variable, value)
        start = path.index("{")
        path = path[:start] + value + path[path.index("}", start) + 1 :]
    if method.body == "*":
        return RestCall(path, {}, document)
    body: JsonObject = document.pop(method.body_field, {}) if method.body_field else {}
    return RestCall(path, _flatten(document), body)


def to_response(method: RpcMethod, answer: Mapping[str, Any]) -> bytes:
    """The wire bytes of the response message for the REST handler's proto3 JSON ``answer``."""
    wire: bytes = parse_answer(answer, method.response).SerializeToString()
    return wire


def _take(document: JsonObject, dotted: str) -> object:
    """The value at a dotted field path; a top-level field is removed (it travels in the path only)."""
    head, _, rest = dotted.partition(".")
    if not rest:
        return document.pop(head, "")
    inner = document.get(head)
    return _take(dict(inner), rest) if isinstance(inner, Mapping) else ""


def _bad_resource(variable: PathVariable, value: object) -> InvalidArgument:
    field = ".".join(snake(part) for part in variable.field.split("."))
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    return InvalidArgument(
        f"Invalid resource field value in the request: {field} {shown} must have the form {variable.pattern}."
    )


def _flatten(document: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Query parameters: nested messages as dotted names, every value as its JSON text."""
    out: dict[str, str] = {}
    for key, value in document.items():
        name = prefix + key
        if isinstance(value, Mapping):
            out.update(_flatten(value, name + "."))
        elif isinstance(value, bool):
            out[name] = "true" if value else "false"
        else:
            out[name] = str(value)
    return out
