"""gRPC request messages as proto3 JSON, several times faster than ``MessageToDict``.

``json_format.MessageToDict`` looks up each field's kind, each enum value's JSON option and each
well-known type on every call; it was the largest part of transcoding a gRPC call to its REST call.
:func:`request_json` writes the same dictionary with one plan per message type: strings, booleans,
integers (64-bit ones as strings), doubles, bytes (base64), enums (names), maps with string keys,
repeated fields, nested messages, Timestamps, Durations and FieldMasks. Anything else (``Any``,
``Struct``, wrappers, a float, an enum value with a JSON option, a non-finite double, an out-of-range
Timestamp) goes to ``MessageToDict``, which gives the same result or raises its own error.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from local_runner.codec.scalars import JsonObject


class _Unplanned(Exception):
    """A form this module does not write: ``MessageToDict`` writes the whole request instead."""


#: Writes one present field's value as JSON.
Writer = Callable[[Any], Any]
#: Per message type: the JSON name and writer of each field, by field number.
_PLANS: dict[str, dict[int, tuple[str, Writer]]] = {}
_INT64 = frozenset({FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64})
_INT32 = frozenset({FieldDescriptor.CPPTYPE_INT32, FieldDescriptor.CPPTYPE_UINT32})
#: Well-known types whose JSON form is their ``ToJsonString()`` (what ``MessageToDict`` calls).
_TO_JSON_STRING = frozenset(
    {"google.protobuf.Timestamp", "google.protobuf.Duration", "google.protobuf.FieldMask"}
)


def request_json(message: Message) -> JsonObject:
    """``MessageToDict(message)``: proto3 JSON with camelCase names, enums as names, defaults left out.

    Raises:
        json_format.SerializeToJsonError: a value with no JSON form (from ``MessageToDict``).
    """
    try:
        return _write(message)
    except (_Unplanned, ValueError, TypeError, KeyError):
        document: JsonObject = json_format.MessageToDict(message)
        return document


def _write(message: Message) -> JsonObject:
    plan = _plan(message.DESCRIPTOR)
    document: JsonObject = {}
    for field, value in message.ListFields():
        name, write = plan[field.number]
        document[name] = write(value)
    return document


def _plan(descriptor: Descriptor) -> dict[int, tuple[str, Writer]]:
    plan = _PLANS.get(descriptor.full_name)
    if plan is None:  # nested types are planned when first written, so a recursive type is no loop
        plan = {field.number: (field.json_name, _writer(field)) for field in descriptor.fields}
        _PLANS[descriptor.full_name] = plan
    return plan


def _writer(field: FieldDescriptor) -> Writer:
    message_type = field.message_type
    if message_type is not None and message_type.GetOptions().map_entry:
        key_field = message_type.fields_by_name["key"]
        if key_field.type != FieldDescriptor.TYPE_STRING:
            return _unplanned
        write_value = _single_writer(message_type.fields_by_name["value"])
        return lambda value: {key: write_value(item) for key, item in value.items()}
    write = _single_writer(field)
    if field.is_repeated:
        return lambda value: [write(item) for item in value]
    return write


def _single_writer(field: FieldDescriptor) -> Writer:
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        return _message_writer(field.message_type)
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        enum = field.enum_type
        if enum.full_name == "google.protobuf.NullValue" or any(v.has_options for v in enum.values):
            return _unplanned
        names = {value.number: value.name for value in enum.values}
        if enum.is_closed:
            return lambda value: names[value]
        return lambda value: names.get(value, value)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _bytes
    if kind == FieldDescriptor.CPPTYPE_STRING:
        return _same
    if kind == FieldDescriptor.CPPTYPE_BOOL:
        return bool
    if kind in _INT64:
        return str
    if kind in _INT32:
        return _same
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return _finite
    return _unplanned  # a 32-bit float: MessageToDict writes its shortest form


def _message_writer(message_type: Descriptor) -> Writer:
    name = message_type.full_name
    if name in _TO_JSON_STRING:
        return _to_json_string
    if name.startswith("google.protobuf.") and name != "google.protobuf.Empty":
        return _unplanned  # Any, Struct, Value, ListValue, wrappers: their own JSON forms
    return _write


def _to_json_string(value: Any) -> Any:
    return value.ToJsonString()  # what MessageToDict calls; ValueError when out of range


def _bytes(value: Any) -> str:
    return base64.b64encode(value).decode()


def _finite(value: Any) -> Any:
    if not math.isfinite(value):
        raise _Unplanned  # "Infinity", "NaN"
    return value


def _same(value: Any) -> Any:
    return value


def _unplanned(value: Any) -> Any:
    raise _Unplanned
