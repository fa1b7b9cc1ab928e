"""Reading one REST call: query parameters, the JSON body and the ``$alt`` enum encoding."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from local_runner.codec.scalars import JsonObject, snake
from local_runner.errors import InvalidArgument
from local_runner.model import TaskView

#: Standard system parameters every Google REST API accepts (reference §1); ignored here.
SYSTEM_PARAMS = frozenset(
    {
        "$.xgafv",
        "access_token",
        "alt",
        "callback",
        "fields",
        "key",
        "oauth_token",
        "prettyPrint",
        "quotaUser",
        "uploadType",
        "upload_protocol",
        "userIp",
    }
)


def camel(name: str) -> str:
    """``page_size`` -> ``pageSize`` (lowerCamelCase names pass through)."""
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), name)


@dataclass(frozen=True)
class Call:
    """What a handler gets: path captures, bound query parameters and the body object."""

    params: Mapping[str, str]
    #: Query parameters bound to request fields, keyed by lowerCamelCase name.
    query: Mapping[str, str] = field(default_factory=dict)
    body: JsonObject = field(default_factory=dict)
    #: ``$alt=json;enum-encoding=int``: answer enums as integers.
    int_enums: bool = False

    def fields(self, *known: str) -> JsonObject:
        """The body keyed by lowerCamelCase names; any name not in ``known`` is INVALID_ARGUMENT."""
        return check_fields(self.body, known)


def check_fields(data: Mapping[str, Any], known: tuple[str, ...], path: str = "") -> JsonObject:
    """``data`` with snake_case keys renamed to lowerCamelCase; unknown names are refused."""
    out: JsonObject = {}
    for key, value in data.items():
        name = camel(key)
        if name not in known:
            where = f" at '{path}'" if path else ""
            raise InvalidArgument(
                f'Invalid JSON payload received. Unknown name "{key}"{where}: Cannot find field.'
            )
        if value is not None:
            out[name] = value
    return out


def parse_view(value: object) -> TaskView:
    """A ``responseView`` given as an enum name or number (query values arrive as strings)."""
    if isinstance(value, str) and value in TaskView.__members__:
        return TaskView[value]
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value in {v.value for v in TaskView}:
        return TaskView(value)
    shown = f'"{value}"' if isinstance(value, str) else repr(value)
    raise InvalidArgument(
        f"Invalid value at 'response_view' (type.googleapis.com/google.cloud.tasks.v2.Task.View), {shown}"
    )


def parse_int(value: str | None, name: str, default: int = 0) -> int:
    """An int32 query parameter such as ``pageSize``."""
    if value is None or value == "":
        return default
    if not re.fullmatch(r"-?\d{1,10}", value.strip()) or not is_int32(int(value)):
        raise InvalidArgument(f"Invalid value at '{snake(name)}' (TYPE_INT32), \"{value}\"")
    return int(value)


def is_int32(value: object) -> bool:
    """Whether ``value`` is a JSON integer that fits a proto ``int32``."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**31) <= value < 2**31


def parse_json_object(raw: bytes) -> JsonObject:
    """The request body as a JSON object; an empty body is ``{}``."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise InvalidArgument("Invalid JSON payload received. The request body is not valid UTF-8.") from None
    except json.JSONDecodeError as error:
        raise InvalidArgument(
            f"Invalid JSON payload received. {error.msg} at line {error.lineno} column {error.colno}."
        ) from None
    except (RecursionError, ValueError):
        raise InvalidArgument("Invalid JSON payload received. The JSON value is nested too deeply.") from None
    if not isinstance(data, dict):
        raise InvalidArgument(
            f"Invalid JSON payload received. Expected an object at the top level, got {type(data).__name__}."
        )
    return data


def _reject_constant(name: str) -> object:
    raise InvalidArgument(f"Invalid JSON payload received. Unexpected token {name}.")
