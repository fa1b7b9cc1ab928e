"""The gRPC method table agrees with the official client: paths, message classes and HTTP rules."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import grpc
import proto
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.cloud.tasks_v2.services.cloud_tasks.transports.rest_base import _BaseCloudTasksRestTransport

from local_runner.api.grpc_methods import METHODS, OPERATIONS_SERVICE, RpcMethod

#: Operations methods without a rule in the Cloud Tasks REST transport (google-api-core's defaults).
NO_CLOUD_TASKS_RULE = {"ListOperations", "DeleteOperation", "CancelOperation", "WaitOperation"}


class RecordingChannel:
    """Stands in for the transport's channel: records each stub's path and (de)serializers."""

    def __init__(self) -> None:
        self.stubs: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {}

    def unary_unary(
        self, path: str, request_serializer: Any = None, response_deserializer: Any = None, **_: Any
    ) -> Callable[..., None]:
        self.stubs[path] = (request_serializer, response_deserializer)
        return lambda *args, **kwargs: None


def client_stubs(
    transport_class: Callable[..., Any] = CloudTasksGrpcTransport,
) -> dict[str, tuple[Callable[..., Any], Callable[..., Any]]]:
    """Each gRPC stub of a client's transport: its path, request serializer and response deserializer."""
    channel = grpc.insecure_channel("127.0.0.1:9")  # never used: the recorder replaces it
    transport = transport_class(channel=channel)
    recorder = RecordingChannel()
    transport._stubs.clear()
    transport._logged_channel = recorder
    for name in dir(type(transport)):
        if isinstance(getattr(type(transport), name, None), property):
            with contextlib.suppress(Exception):  # properties that are not stubs
                getattr(transport, name)
    channel.close()
    return recorder.stubs


def test_every_client_method_is_in_the_table_with_its_messages() -> None:
    stubs = client_stubs()
    table = {method.full_name: method for method in METHODS}
    assert set(stubs) == set(table)
    assert_same_messages(stubs, table)


def assert_same_messages(
    stubs: dict[str, tuple[Callable[..., Any], Callable[..., Any]]], table: dict[str, RpcMethod]
) -> None:
    """Each stub's request and response classes are those of its method in ``table``."""
    for path, (serialize, deserialize) in stubs.items():
        method = table[path]
        serialize(method.request())  # raises TypeError unless it is the client's request class
        answer = deserialize(b"")
        pb = type(answer).pb(answer) if isinstance(answer, proto.Message) else answer
        assert type(pb) is method.response, path


def test_http_rules_match_the_rest_transport() -> None:
    assert {method.name for method in METHODS if method.service == OPERATIONS_SERVICE} == {
        "GetOperation",
        *NO_CLOUD_TASKS_RULE,
    }
    for method in METHODS:
        if method.name in NO_CLOUD_TASKS_RULE:
            continue  # their REST paths are checked by tests/contract/test_operations.py
        base = getattr(_BaseCloudTasksRestTransport, f"_Base{method.name}")
        (rule,) = base._get_http_options()
        assert rule["method"].upper() == method.verb, method.name
        assert rule["uri"] == "/v2/" + method.path, method.name
        assert rule.get("body", "") == method.body, method.name


def test_path_variables_use_json_names() -> None:
    update: RpcMethod = next(m for m in METHODS if m.name == "UpdateCmekConfig")
    (variable,) = update.variables
    assert variable.field == "cmekConfig.name"
    assert variable.regex.fullmatch("projects/p/locations/l/cmekConfig")
    assert not variable.regex.fullmatch("projects/p/locations/l/queues/q")
