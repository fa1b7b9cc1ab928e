"""The REST handlers' proto3 JSON answers as protobuf messages, several times faster than ParseDict.

``json_format.ParseDict`` accepts every proto3 JSON form and parses each Timestamp with ``strptime``;
it was the largest part of a gRPC call's cost in the runner's own code. :func:`parse_answer` reads the
forms the runner's JSON codec writes (RFC 3339 timestamps in UTC, ``"1.5s"`` durations, enum names,
base64 bytes, int64 as strings) with one plan per message type, and leaves anything else (``Any``,
``Struct``, a map of messages, an unexpected spelling) to ``ParseDict``, so both give the same message.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
from collections.abc import Callable, Mapping
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

_UTC = datetime.UTC
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?Z")
_DURATION = re.compile(r"(-?)(\d+)(?:\.(\d{1,9}))?s")
_INTEGERS = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
    }
)
_FLOATS = frozenset({FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE})


class _Unplanned(Exception):
    """A form this module does not read: ``ParseDict`` reads the whole answer instead."""


#: Reads one JSON value into field ``name`` of a message.
Setter = Callable[[Message, str, Any], None]
_PLANS: dict[str, dict[str, tuple[str, Setter]]] = {}


def parse_answer(answer: Mapping[str, Any], message_class: type[Message]) -> Message:
    """``answer`` as a ``message_class`` message; unknown fields are ignored, as the REST client does."""
    message = message_class()
    try:
        _fill(message, answer)
    except (_Unplanned, ValueError, TypeError, KeyError, binascii.Error):
        message = message_class()
        json_format.ParseDict(answer, message, ignore_unknown_fields=True)
    return message


def _fill(message: Message, document: Mapping[str, Any]) -> None:
    if not isinstance(document, Mapping):
        raise _Unplanned
    plan = _plan(message.DESCRIPTOR)
    for key, value in document.items():
        step = plan.get(key)
        if step is not None and value is not None:
            name, setter = step
            setter(message, name, value)


def _plan(descriptor: Descriptor) -> dict[str, tuple[str, Setter]]:
    """How to read each field of a message type, by its JSON name (and its proto name)."""
    plan = _PLANS.get(descriptor.full_name)
    if plan is None:
        plan = {}
        for field in descriptor.fields:
            step = (field.name, _setter(field))
            plan[field.json_name] = step
            plan[field.name] = step
        _PLANS[descriptor.full_name] = plan
    return plan


def _setter(field: FieldDescriptor) -> Setter:
    message_type = field.message_type
    repeated = field.is_repeated
    if message_type is not None and message_type.GetOptions().map_entry:
        value_field = message_type.fields_by_name["value"]
        if value_field.message_type is not None:
            return _unplanned
        read_value = _scalar_reader(value_field)
        return lambda message, name, value: getattr(message, name).update(
            {key: read_value(item) for key, item in value.items()}
        )
    if message_type is not None:
        read_message = _message_reader(message_type)
        if repeated:

            def read_each(message: Message, name: str, value: Any) -> None:
                for item in value:
                    read_message(getattr(message, name).add(), item)

            return read_each
        return lambda message, name, value: read_message(getattr(message, name), value)
    read = _scalar_reader(field)
    if repeated:
        return lambda message, name, value: getattr(message, name).extend(read(item) for item in value)
    return lambda message, name, value: setattr(message, name, read(value))


def _message_reader(message_type: Descriptor) -> Callable[[Message, Any], None]:
    """Fills a (sub)message from its JSON value, marking it present even when the value is ``{}``."""
    if message_type.full_name == "google.protobuf.Timestamp":
        return _timestamp
    if message_type.full_name == "google.protobuf.Duration":
        return _duration
    if message_type.full_name.startswith("google.protobuf.") and message_type.full_name != (
        "google.protobuf.Empty"
    ):
        return _unplanned_message  # Any, Struct, Value, wrappers, FieldMask: their JSON forms differ

    def read(message: Message, value: Any) -> None:
        message.SetInParent()
        _fill(message, value)

    return read


def _scalar_reader(field: FieldDescriptor) -> Callable[[Any], Any]:
    if field.enum_type is not None:
        numbers = {value.name: value.number for value in field.enum_type.values}
        return lambda value: value if type(value) is int else numbers[value]
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _bytes
    if field.type in _INTEGERS:
        return _integer
    if field.type in _FLOATS:
        return float
    if field.type == FieldDescriptor.TYPE_BOOL:
        return _bool
    return _string


def _timestamp(message: Message, value: Any) -> None:
    match = _TIMESTAMP.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _Unplanned
    whole, fraction = match.groups()
    moment = datetime.datetime.fromisoformat(whole).replace(tzinfo=_UTC)
    message.seconds = int(moment.timestamp())
    message.nanos = int(fraction.ljust(9, "0")) if fraction else 0


def _duration(message: Message, value: Any) -> None:
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise _Unplanned
    sign, whole, fraction = match.groups()
    seconds = int(whole)
    nanos = int(fraction.ljust(9, "0")) if fraction else 0
    message.seconds = -seconds if sign else seconds
    message.nanos = -nanos if sign else nanos


def _bytes(value: Any) -> bytes:
    if not isinstance(value, str):
        raise _Unplanned
    return base64.b64decode(value, validate=True)


def _integer(value: Any) -> int:
    if type(value) is int:
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    raise _Unplanned


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _Unplanned
    return value


def _string(value: Any) -> str:
    if type(value) is not str:
        raise _Unplanned
    return value


def _unplanned(message: Message, name: str, value: Any) -> None:
    raise _Unplanned


def _unplanned_message(message: Message, value: Any) -> None:
    raise _Unplanned
