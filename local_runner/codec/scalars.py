"""Proto3 JSON scalars: Timestamps, Durations, bytes, enums and field-name casing.

Output: Durations like ``"0.100s"``, Timestamps RFC 3339 in UTC with 0, 3 or 6 fractional digits, bytes as
base64, enums as names (or integers on request). Input also accepts RFC 3339 offsets and URL-safe base64.
A value that does not parse raises ``InvalidArgument`` naming the field's path, as the real service does.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import math
import re
from datetime import UTC, datetime
from typing import Any

from local_runner.errors import InvalidArgument

#: A JSON object as the runner reads and writes it.
JsonObject = dict[str, Any]

#: google.protobuf.Timestamp's range, 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z (whole seconds at the top,
#: so that rounding to microseconds never leaves year 9999).
MIN_TIMESTAMP = -62_135_596_800.0
MAX_TIMESTAMP = 253_402_300_799.0
#: The largest google.protobuf.Duration: about 10,000 years.
MAX_DURATION_SECONDS = 315_576_000_000
_DURATION_RE = re.compile(r"(-)?(\d+)(?:\.(\d{1,9}))?s")
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})")


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
        raise invalid_value(path, "google.protobuf.Timestamp", text)
    fraction = ""
    head = text
    match = re.search(r"\.(\d+)", text)
    if match:
        fraction = match.group(1)
        head = text[: match.start()] + text[match.end() :]
    try:
        parsed = datetime.fromisoformat(head.replace("z", "Z").replace("t", "T").replace("Z", "+00:00"))
    except ValueError:
        raise invalid_value(path, "google.protobuf.Timestamp", text) from None
    # Truncated to the microsecond, as task.proto says of the Timestamps the service keeps: ".999999999"
    # stays in its second (rounding would carry it into the next).
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    instant = parsed.timestamp() + micros / 1_000_000
    if not MIN_TIMESTAMP <= instant <= MAX_TIMESTAMP:  # google.protobuf.Timestamp's range
        raise invalid_value(path, "google.protobuf.Timestamp", text)
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
        raise invalid_value(path, "google.protobuf.Duration", text)
    value = int(match.group(2)) + (int((match.group(3) or "0").ljust(9, "0")) / 1e9)
    if value > MAX_DURATION_SECONDS:
        raise invalid_value(path, "google.protobuf.Duration", text)
    return -value if match.group(1) else value


def invalid_value(path: str, type_name: str, value: object) -> InvalidArgument:
    """The real service's error for a value of the wrong type or out of range at ``path``."""
    return InvalidArgument(f"Invalid value at '{path}' ({type_name}), {show(value)}")


def show(value: object) -> str:
    """``value`` as an error message quotes it, cut to 80 characters."""
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 80 else text[:77] + "..."


@functools.cache
def snake(name: str) -> str:
    """``pageSize`` -> ``page_size``, as the real service names fields in messages."""
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def decode_bytes(value: object) -> bytes | None:
    """Proto3 JSON bytes: standard or URL-safe base64, padding optional (``None`` if not that)."""
    if not isinstance(value, str):
        return None
    text = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        return None


def enum_to_json(member: enum.IntEnum, int_enums: bool) -> str | int:
    """An enum as proto3 JSON writes it: its name, or its number when the caller asked for integers."""
    return int(member) if int_enums else member.name
