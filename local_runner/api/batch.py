"""BatchCreateTasks, BatchDeleteTasks and the long-running operations they answer with.

Both run to completion inside the call, so the returned ``google.longrunning.Operation`` is already
``done``; :class:`~local_runner.api.operations.Operations` keeps it for GetOperation and the other
Operations methods. Each request of a batch succeeds or fails on its own (the real service's batches
are not atomic), and failures are reported per index in the metadata's ``failedRequests``. When every
request fails the operation carries ``error`` ABORTED, as the v2 protos document.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from local_runner.api.operations import Operations
from local_runner.api.request import Call, check_fields, parse_view
from local_runner.codec.scalars import JsonObject, format_timestamp
from local_runner.codec.tasks import new_task_from_json, task_to_json
from local_runner.errors import ApiError, InvalidArgument
from local_runner.model import Task, TaskView, parse_queue_name, parse_task_name
from local_runner.service import TasksService

MAX_CREATE_REQUESTS = 100
MAX_DELETE_NAMES = 1000
_TYPE = "type.googleapis.com/google.cloud.tasks.v2."
#: A ``requestId`` the runner takes: it is the operation's id, one segment of the operation's name.
_REQUEST_ID = re.compile(r"[^/:]{1,500}")
#: The metadata's State numbers (the two messages number PARTIALLY_SUCCEEDED differently).
_STATE_NUMBERS = {
    "BatchCreateTasksMetadata": {"SUCCEEDED": 2, "PARTIALLY_SUCCEEDED": 5},
    "BatchDeleteTasksMetadata": {"SUCCEEDED": 2, "PARTIALLY_SUCCEEDED": 3},
}
_NONE_SUCCEEDED = (
    "None of the requests succeeded, refer to {metadata}.failed_requests for individual error details"
)


@dataclass(frozen=True)
class _Batch:
    """One batch call being run: its queue, its operation's name and metadata type, its entries."""

    parent: str
    operation: str
    metadata_type: str
    items: Sequence[Any]
    started: float
    int_enums: bool


class BatchTasks:
    """The batch methods, over the same service as CreateTask and DeleteTask.

    ``operations`` keeps the operations they answer, for GetOperation and a retried ``requestId``.
    """

    def __init__(self, service: TasksService, operations: Operations) -> None:
        self.service = service
        self.operations = operations

    def create(self, call: Call) -> JsonObject:
        """BatchCreateTasks: up to 100 CreateTaskRequests for the queue in the path."""
        batch = self._begin(call, "requests", MAX_CREATE_REQUESTS, "BatchCreateTasksMetadata")
        if not isinstance(batch, _Batch):
            return batch
        parent = batch.parent
        failed: dict[int, ApiError] = {}
        built: list[tuple[int, Task, TaskView]] = []
        for index, item in enumerate(batch.items):
            where = f"requests[{index}]"
            try:
                if not isinstance(item, Mapping):
                    raise InvalidArgument(f"Invalid value at '{where}' (CreateTaskRequest), {item!r}")
                request = check_fields(item, ("parent", "task", "responseView"), where)
                if request.get("parent", parent) != parent:
                    raise InvalidArgument(
                        f"{where}.parent ({request['parent']}) must be the batch's parent ({parent})."
                    )
                view = parse_view(request.get("responseView", "BASIC"))
                new = new_task_from_json(request.get("task", {}), f"{where}.task")
                built.append((index, self.service.new_task(parent, new), view))
            except ApiError as error:
                failed[index] = error
        refusals = self.service.add_tasks([task for _, task, _ in built]) if built else []
        created = []
        for (index, task, view), refused in zip(built, refusals, strict=True):
            if refused is None:
                created.append(task_to_json(task, view, call.int_enums))
            else:
                failed[index] = refused
        return self._finish(batch, failed, {"@type": _TYPE + "BatchCreateTasksResponse", "tasks": created})

    def delete(self, call: Call) -> JsonObject:
        """BatchDeleteTasks: up to 1000 task names of the queue in the path; not atomic."""
        batch = self._begin(call, "names", MAX_DELETE_NAMES, "BatchDeleteTasksMetadata")
        if not isinstance(batch, _Batch):
            return batch
        failed: dict[int, ApiError] = {}
        for index, name in enumerate(batch.items):
            try:
                if not isinstance(name, str):
                    raise InvalidArgument(f"Invalid value at 'names[{index}]' (TYPE_STRING), {name!r}")
                parse_task_name(name, parent=batch.parent)
                self.service.delete_task(name)
            except ApiError as error:
                failed[index] = error
        return self._finish(
            batch, failed, {"@type": "type.googleapis.com/google.protobuf.Empty", "value": {}}
        )

    def _begin(self, call: Call, key: str, limit: int, metadata_type: str) -> _Batch | JsonObject:
        """The batch to run, or the operation of an earlier call with the same ``requestId``.

        Raises:
            InvalidArgument: no entries, too many, or a malformed field.
            NotFound: the queue does not exist.
        """
        parent = call.params["parent"]
        fields = call.fields("parent", key, "requestId")
        request_id = fields.get("requestId") or str(uuid.uuid4())
        if not isinstance(request_id, str):
            raise InvalidArgument(f"Invalid value at 'request_id' (TYPE_STRING), {request_id!r}")
        if not _REQUEST_ID.fullmatch(request_id):
            # It becomes the operation's id, one segment of ``.../operations/{id}``: with a ``/`` or ``:``
            # no GetOperation, DeleteOperation or WaitOperation could name it again.
            raise InvalidArgument(
                "request_id must be 1 to 500 characters and contain no '/' or ':' (it names the operation)."
            )
        location = str(parse_queue_name(parent)).split("/queues/")[0]
        operation = f"{location}/operations/{request_id}"
        earlier = self.operations.find(operation)
        if earlier is not None:  # a retry is not run twice
            return earlier
        items = _list(fields, key, limit)
        self.service.get_queue(parent)
        return _Batch(parent, operation, metadata_type, items, self.service.clock.now(), call.int_enums)

    def _finish(self, batch: _Batch, failed: Mapping[int, ApiError], response: JsonObject) -> JsonObject:
        """Store and return the done operation."""
        state = "PARTIALLY_SUCCEEDED" if failed else "SUCCEEDED"
        metadata: JsonObject = {
            "@type": _TYPE + batch.metadata_type,
            "startTime": format_timestamp(batch.started),
            "endTime": format_timestamp(self.service.clock.now()),
            "state": _STATE_NUMBERS[batch.metadata_type][state] if batch.int_enums else state,
        }
        if failed:
            metadata["failedRequests"] = {
                str(index): {"code": error.code.rpc_code, "message": error.message}
                for index, error in sorted(failed.items())
            }
        operation: JsonObject = {"name": batch.operation, "metadata": metadata, "done": True}
        if failed and len(failed) == len(batch.items):
            message = _NONE_SUCCEEDED.format(metadata=batch.metadata_type)
            operation["error"] = {"code": 10, "message": message}  # google.rpc.Code.ABORTED
        else:
            operation["response"] = response
        self.operations.keep(operation)
        return operation


def _list(fields: JsonObject, key: str, limit: int) -> Sequence[Any]:
    items = fields.get(key, [])
    if not isinstance(items, list):
        raise InvalidArgument(f"Invalid value at '{key}', {items!r}: a list is required.")
    if not items:
        raise InvalidArgument(f"{key} is required: give between 1 and {limit} entries.")
    if len(items) > limit:
        raise InvalidArgument(f"The maximum number of {key} in a batch is {limit}; got {len(items)}.")
    return items
