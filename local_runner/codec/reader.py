"""The proto3 JSON field reader: checks names and types and reports the field path on every error.

Every resource codec reads its JSON objects through :class:`Reader`, so unknown names, wrong types and
out-of-range integers are refused with the real service's messages in one place.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from typing import TypeVar

from local_runner.codec.scalars import (
    decode_bytes,
    invalid_value,
    parse_duration,
    parse_timestamp,
    show,
    snake,
)
from local_runner.errors import InvalidArgument

E = TypeVar("E", bound=enum.IntEnum)
T = TypeVar("T")

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


@functools.cache
def _aliases(known: tuple[str, ...]) -> dict[str, str]:
    """Each accepted spelling of the fields ``known`` (camelCase and snake_case) to its camelCase."""
    return {name: name for name in known} | {snake(name): name for name in known}


class Reader:
    """Reads one JSON object; accepts camelCase and snake_case keys, rejects unknown ones."""

    def __init__(self, data: object, path: str, known: tuple[str, ...]) -> None:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"Invalid value at '{path}': expected an object, got {show(data)}")
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
        """Whether the object sets ``key`` (a JSON null counts as unset)."""
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def _get(self, key: str, check: Callable[[object], T | None], type_name: str) -> T | None:
        if key not in self._values:
            return None
        value = self._values[key]
        result = check(value)
        if result is None:
            raise invalid_value(f"{self.path}.{snake(key)}", type_name, value)
        return result

    def string(self, key: str) -> str | None:
        """A string field, or ``None`` if unset."""
        return self._get(key, lambda v: v if isinstance(v, str) else None, "TYPE_STRING")

    def number(self, key: str) -> float | None:
        """A double field (a JSON number or a numeric string)."""
        return self._get(key, _as_float, "TYPE_DOUBLE")

    def integer(self, key: str) -> int | None:
        """An int32 field (a JSON number or a decimal string)."""
        return self._get(key, lambda v: _in_range(_as_int(v), _INT32), "TYPE_INT32")

    def integer64(self, key: str) -> int | None:
        """An int64 field (a JSON number or, as proto3 JSON writes it, a decimal string)."""
        return self._get(key, lambda v: _in_range(_as_int(v), _INT64), "TYPE_INT64")

    def boolean(self, key: str) -> bool | None:
        """A bool field."""
        return self._get(key, lambda v: v if isinstance(v, bool) else None, "TYPE_BOOL")

    def duration(self, key: str) -> float | None:
        """A google.protobuf.Duration field, in seconds."""
        if key not in self._values:
            return None
        return parse_duration(self._values[key], f"{self.path}.{snake(key)}")

    def timestamp(self, key: str) -> float | None:
        """A google.protobuf.Timestamp field, in seconds since 1970."""
        if key not in self._values:
            return None
        return parse_timestamp(self._values[key], f"{self.path}.{snake(key)}")  # type: ignore[arg-type]

    def enum(self, key: str, kind: type[E]) -> E | None:
        """An enum field, given by name or number."""
        if key not in self._values:
            return None
        value = self._values[key]
        member = as_enum(value, kind)
        if member is None:
            raise invalid_value(f"{self.path}.{snake(key)}", f"type.googleapis.com/{kind.__name__}", value)
        return member

    def bytes_(self, key: str) -> bytes | None:
        """A bytes field (base64)."""
        return self._get(key, decode_bytes, "TYPE_BYTES")

    def message(self, key: str, known: tuple[str, ...]) -> Reader | None:
        """A nested message with the fields ``known``, read by its own reader."""
        if key not in self._values:
            return None
        return Reader(self._values[key], f"{self.path}.{snake(key)}", known)

    def string_map(self, key: str) -> dict[str, str] | None:
        """A ``map<string, string>`` field."""
        return self._get(key, _as_string_map, "map<string, string>")

    def raw(self, key: str) -> object:
        """A field's JSON value as given, unchecked (``None`` if unset)."""
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


def as_enum(value: object, kind: type[E]) -> E | None:
    """``value`` as a member of ``kind``, given by name or number (``None`` if it is neither)."""
    if isinstance(value, str):
        return _enum_names(kind).get(value)
    number = _as_int(value)
    if number is not None and number in {member.value for member in kind}:
        return kind(number)
    return None


def _as_string_map(value: object) -> dict[str, str] | None:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return None
    return dict(value)
