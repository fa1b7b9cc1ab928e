"""The gRPC method table: each RPC's message classes and its HTTP rule (``google.api.http``).

The message classes ship in ``google-cloud-tasks`` (proto-plus types, whose ``.pb()`` is the protobuf
class), ``grpc-google-iam-v1`` and ``googleapis-common-protos``; no ``.proto`` file is compiled. The HTTP
rules are the ones in the Cloud Tasks v2 protos (``cloudtasks.proto``), so a gRPC call can be transcoded
to the REST call the REST transport would send and answered by the same handler.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from google.cloud.location import locations_pb2
from google.cloud.tasks_v2 import types
from google.iam.v1 import iam_policy_pb2, policy_pb2
from google.longrunning import operations_pb2
from google.protobuf import empty_pb2
from google.protobuf.message import Message

from local_runner.api.request import camel

TASKS_SERVICE = "google.cloud.tasks.v2.CloudTasks"
LOCATIONS_SERVICE = "google.cloud.location.Locations"
OPERATIONS_SERVICE = "google.longrunning.Operations"

_VARIABLE = re.compile(r"\{([\w.]+)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class PathVariable:
    """One ``{field=pattern}`` of an HTTP rule's path."""

    #: The request field, as a dotted path of lowerCamelCase names (proto3 JSON).
    field: str
    #: The resource pattern, e.g. ``projects/*/locations/*``.
    pattern: str
    regex: re.Pattern[str]


@dataclass(frozen=True)
class RpcMethod:
    """One unary RPC: ``/service/name``, its messages, and its HTTP rule."""

    service: str
    name: str
    request: type[Message]
    response: type[Message]
    #: HTTP verb of the rule (upper case).
    verb: str
    #: The rule's path after ``prefix``, variables included, e.g. ``{parent=projects/*/locations/*}/queues``.
    path: str
    #: ``*`` (every field not in the path), a top-level field name, or ``""`` (every field is a query one).
    body: str = ""
    #: The rule's API version prefix (``/v2/``: Cloud Tasks; ``/v1/``: Cloud Scheduler): the REST router.
    prefix: str = "/v2/"
    variables: tuple[PathVariable, ...] = field(init=False)
    #: ``body`` as a proto3 JSON (lowerCamelCase) name, when it names one field.
    body_field: str = field(init=False)

    def __post_init__(self) -> None:
        found = tuple(
            PathVariable(_json_path(name), pattern or "*", _pattern_regex(pattern or "*"))
            for name, pattern in _VARIABLE.findall(self.path)
        )
        object.__setattr__(self, "variables", found)
        object.__setattr__(self, "body_field", camel(self.body) if self.body not in ("", "*") else "")

    @property
    def full_name(self) -> str:
        """The gRPC path, ``/package.Service/Method``."""
        return f"/{self.service}/{self.name}"


def _json_path(dotted: str) -> str:
    """``cmek_config.name`` -> ``cmekConfig.name``."""
    return ".".join(camel(part) for part in dotted.split("."))


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """``projects/*/locations/*`` -> a regex where ``*`` is one non-empty path segment."""
    return re.compile("/".join("[^/]+" if part == "*" else re.escape(part) for part in pattern.split("/")))


def _pb(proto_plus_class: type) -> type[Message]:
    """The protobuf class behind a proto-plus message class."""
    pb: type[Message] = proto_plus_class.pb()  # type: ignore[attr-defined]
    return pb


_LOCATION = "projects/*/locations/*"
_QUEUE = _LOCATION + "/queues/*"
_TASK = _QUEUE + "/tasks/*"


def _tasks(
    name: str, request: str, response: type[Message], verb: str, path: str, body: str = ""
) -> RpcMethod:
    return RpcMethod(TASKS_SERVICE, name, _pb(getattr(types, request)), response, verb, path, body)


_QUEUE_MSG = _pb(types.Queue)
_TASK_MSG = _pb(types.Task)
_EMPTY = empty_pb2.Empty

#: Every unary RPC the runner answers (``google-cloud-tasks`` 2.26's gRPC transport, mixins included).
METHODS: tuple[RpcMethod, ...] = (
    _tasks(
        "ListQueues",
        "ListQueuesRequest",
        _pb(types.ListQueuesResponse),
        "GET",
        f"{{parent={_LOCATION}}}/queues",
    ),
    _tasks("GetQueue", "GetQueueRequest", _QUEUE_MSG, "GET", f"{{name={_QUEUE}}}"),
    _tasks(
        "CreateQueue", "CreateQueueRequest", _QUEUE_MSG, "POST", f"{{parent={_LOCATION}}}/queues", "queue"
    ),
    _tasks("UpdateQueue", "UpdateQueueRequest", _QUEUE_MSG, "PATCH", f"{{queue.name={_QUEUE}}}", "queue"),
    _tasks("DeleteQueue", "DeleteQueueRequest", _EMPTY, "DELETE", f"{{name={_QUEUE}}}"),
    _tasks("PurgeQueue", "PurgeQueueRequest", _QUEUE_MSG, "POST", f"{{name={_QUEUE}}}:purge", "*"),
    _tasks("PauseQueue", "PauseQueueRequest", _QUEUE_MSG, "POST", f"{{name={_QUEUE}}}:pause", "*"),
    _tasks("ResumeQueue", "ResumeQueueRequest", _QUEUE_MSG, "POST", f"{{name={_QUEUE}}}:resume", "*"),
    RpcMethod(
        TASKS_SERVICE,
        "GetIamPolicy",
        iam_policy_pb2.GetIamPolicyRequest,
        policy_pb2.Policy,
        "POST",
        f"{{resource={_QUEUE}}}:getIamPolicy",
        "*",
    ),
    RpcMethod(
        TASKS_SERVICE,
        "SetIamPolicy",
        iam_policy_pb2.SetIamPolicyRequest,
        policy_pb2.Policy,
        "POST",
        f"{{resource={_QUEUE}}}:setIamPolicy",
        "*",
    ),
    RpcMethod(
        TASKS_SERVICE,
        "TestIamPermissions",
        iam_policy_pb2.TestIamPermissionsRequest,
        iam_policy_pb2.TestIamPermissionsResponse,
        "POST",
        f"{{resource={_QUEUE}}}:testIamPermissions",
        "*",
    ),
    _tasks(
        "ListTasks", "ListTasksRequest", _pb(types.ListTasksResponse), "GET", f"{{parent={_QUEUE}}}/tasks"
    ),
    _tasks("GetTask", "GetTaskRequest", _TASK_MSG, "GET", f"{{name={_TASK}}}"),
    _tasks("CreateTask", "CreateTaskRequest", _TASK_MSG, "POST", f"{{parent={_QUEUE}}}/tasks", "*"),
    _tasks(
        "BatchCreateTasks",
        "BatchCreateTasksRequest",
        operations_pb2.Operation,
        "POST",
        f"{{parent={_QUEUE}}}/tasks:batchCreate",
        "*",
    ),
    _tasks("DeleteTask", "DeleteTaskRequest", _EMPTY, "DELETE", f"{{name={_TASK}}}"),
    _tasks(
        "BatchDeleteTasks",
        "BatchDeleteTasksRequest",
        operations_pb2.Operation,
        "POST",
        f"{{parent={_QUEUE}}}/tasks:batchDelete",
        "*",
    ),
    _tasks("RunTask", "RunTaskRequest", _TASK_MSG, "POST", f"{{name={_TASK}}}:run", "*"),
    _tasks(
        "UpdateCmekConfig",
        "UpdateCmekConfigRequest",
        _pb(types.CmekConfig),
        "PATCH",
        f"{{cmek_config.name={_LOCATION}/cmekConfig}}",
        "cmek_config",
    ),
    _tasks(
        "GetCmekConfig",
        "GetCmekConfigRequest",
        _pb(types.CmekConfig),
        "GET",
        f"{{name={_LOCATION}/cmekConfig}}",
    ),
    RpcMethod(
        LOCATIONS_SERVICE,
        "ListLocations",
        locations_pb2.ListLocationsRequest,
        locations_pb2.ListLocationsResponse,
        "GET",
        "{name=projects/*}/locations",
    ),
    RpcMethod(
        LOCATIONS_SERVICE,
        "GetLocation",
        locations_pb2.GetLocationRequest,
        locations_pb2.Location,
        "GET",
        f"{{name={_LOCATION}}}",
    ),
    RpcMethod(
        OPERATIONS_SERVICE,
        "GetOperation",
        operations_pb2.GetOperationRequest,
        operations_pb2.Operation,
        "GET",
        f"{{name={_LOCATION}/operations/*}}",
    ),
    # The other Operations methods have no HTTP rule in the Cloud Tasks service config: these are
    # google-api-core's REST defaults under /v2/, and WaitOperation's ``:wait`` is the runner's own.
    RpcMethod(
        OPERATIONS_SERVICE,
        "ListOperations",
        operations_pb2.ListOperationsRequest,
        operations_pb2.ListOperationsResponse,
        "GET",
        f"{{name={_LOCATION}}}/operations",
    ),
    RpcMethod(
        OPERATIONS_SERVICE,
        "DeleteOperation",
        operations_pb2.DeleteOperationRequest,
        _EMPTY,
        "DELETE",
        f"{{name={_LOCATION}/operations/*}}",
    ),
    RpcMethod(
        OPERATIONS_SERVICE,
        "CancelOperation",
        operations_pb2.CancelOperationRequest,
        _EMPTY,
        "POST",
        f"{{name={_LOCATION}/operations/*}}:cancel",
        "*",
    ),
    RpcMethod(
        OPERATIONS_SERVICE,
        "WaitOperation",
        operations_pb2.WaitOperationRequest,
        operations_pb2.Operation,
        "POST",
        f"{{name={_LOCATION}/operations/*}}:wait",
        "*",
    ),
)


def by_service() -> Iterator[tuple[str, list[RpcMethod]]]:
    """The table grouped by gRPC service name."""
    for service in (TASKS_SERVICE, LOCATIONS_SERVICE, OPERATIONS_SERVICE):
        yield service, [method for method in METHODS if method.service == service]
