"""``google.longrunning.Operations`` over the operations that BatchCreateTasks and BatchDeleteTasks answer.

Batches run to completion inside their call, so every operation here is already ``done``: GetOperation
and WaitOperation answer it at once, CancelOperation has nothing left to stop and leaves it as it is,
DeleteOperation forgets it, and ListOperations lists a location's operations oldest first. The real
service documents only GetOperation (the HTTP rule in google-cloud-tasks); the other four follow
``google/longrunning/operations.proto``. Operations are kept in memory (the most recent
:data:`MAX_OPERATIONS`), not in the store, so a restart forgets them.
"""

from __future__ import annotations

import itertools
import re
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

from local_runner.api.request import Call, parse_int
from local_runner.codec.scalars import JsonObject, parse_duration
from local_runner.errors import InvalidArgument, NotFound
from local_runner.model import parse_location
from local_runner.service.page_tokens import INVALID, decode_page_token, encode_page_token

#: How many finished operations the runner still remembers.
MAX_OPERATIONS = 10_000
#: ListOperations' page size when none is asked for, and the most one page holds (a larger one is cut).
MAX_PAGE_SIZE = 1000

_FILTER_RE = re.compile(r"\s*done\s*(:|=|!=)\s*(true|false)\s*")


class _Kept(NamedTuple):
    number: int
    operation: JsonObject


class Operations:
    """The done operations of one runner and the five Operations methods over them."""

    def __init__(self) -> None:
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._numbers = itertools.count()

    def find(self, name: str) -> JsonObject | None:
        """The operation called ``name``, if the runner still remembers it."""
        kept = self._kept.get(name)
        return None if kept is None else kept.operation

    def keep(self, operation: JsonObject) -> None:
        """Remember a done operation, forgetting the oldest beyond :data:`MAX_OPERATIONS`."""
        self._kept[operation["name"]] = _Kept(next(self._numbers), operation)
        while len(self._kept) > MAX_OPERATIONS:
            self._kept.popitem(last=False)

    def get(self, call: Call) -> JsonObject:
        """GetOperation."""
        return self._known(call.params["name"])

    def wait(self, call: Call) -> JsonObject:
        """WaitOperation: the operation at once, since it is done (``timeout`` is checked, not needed)."""
        fields = call.fields("timeout")  # ``name`` is the path's
        if "timeout" in fields:
            parse_duration(fields["timeout"], "timeout")
        return self._known(call.params["name"])

    def cancel(self, call: Call) -> JsonObject:
        """CancelOperation: nothing to stop in a done operation, which keeps its result."""
        call.fields()  # ``name`` is the path's; nothing else is read
        self._known(call.params["name"])
        return {}

    def delete(self, call: Call) -> JsonObject:
        """DeleteOperation: forget the operation (its tasks are untouched)."""
        name = call.params["name"]
        self._known(name)
        del self._kept[name]
        return {}

    def list(self, call: Call) -> JsonObject:
        """ListOperations: a location's operations, oldest first, with a ``done`` filter and pages."""
        location = call.params["name"]
        parse_location(location)
        filter_text = call.query.get("filter", "")
        keep = _done_filter(filter_text)
        size = parse_int(call.query.get("pageSize"), "pageSize")
        if size < 0:
            raise InvalidArgument(f"page_size must be between 0 and {MAX_PAGE_SIZE}; got {size}.")
        size = min(size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        if call.query.get("returnPartialSuccess", "false") not in ("true", "false"):
            shown = call.query["returnPartialSuccess"]
            raise InvalidArgument(f"Invalid value at 'return_partial_success' (TYPE_BOOL), \"{shown}\"")
        token = call.query.get("pageToken", "")
        after = _decode_token(token, location, filter_text) if token else -1
        prefix = location + "/operations/"
        found = [
            kept
            for name, kept in self._kept.items()
            if name.startswith(prefix) and kept.number > after and keep(kept.operation)
        ]
        out: JsonObject = {"operations": [kept.operation for kept in found[:size]]} if found else {}
        if len(found) > size:
            out["nextPageToken"] = encode_page_token(filter_text, [location, found[size - 1].number])
        return out

    def _known(self, name: str) -> JsonObject:
        parse_location(name.rsplit("/operations/", 1)[0])
        operation = self.find(name)
        if operation is None:
            raise NotFound(f"Operation {name} was not found.")
        return operation


def _done_filter(text: str) -> Callable[[JsonObject], bool]:
    """The predicate of a ListOperations filter; only ``done`` comparisons are supported."""
    if not text.strip():
        return lambda operation: True
    match = _FILTER_RE.fullmatch(text)
    if match is None:
        raise InvalidArgument(
            f'Unsupported filter "{text}": the local runner supports only "done" compared to true or false '
            'with "=", ":" or "!=", e.g. "done = true" (every operation of the runner is done).'
        )
    wanted = (match.group(2) == "true") != (match.group(1) == "!=")
    return lambda operation: bool(operation.get("done")) is wanted


def _decode_token(token: str, location: str, filter_text: str) -> int:
    after = decode_page_token(token, filter_text)
    if (
        not isinstance(after, list)
        or len(after) != 2
        or after[0] != location
        or not isinstance(after[1], int)
    ):
        raise InvalidArgument(INVALID)
    return after[1]
