"""google.longrunning.Operations through each transport's operations client, against ``runner serve``.

The ``client`` fixture runs each test on REST and on gRPC; ``transport.operations_client`` is the
official operations client of that transport (google-api-core's). WaitOperation and paged lists have no
method there on gRPC, so those go through the generated ``OperationsStub`` on the same channel.
"""

from __future__ import annotations

import itertools

import grpc
import pytest
import requests
from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import BadRequest, NotFound, from_grpc_error
from google.api_core.operations_v1 import AbstractOperationsClient, OperationsClient
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from google.longrunning import operations_pb2, operations_pb2_grpc
from google.protobuf import duration_pb2, json_format

_ids = itertools.count()


def batches(client: tasks_v2.CloudTasksClient, count: int) -> tuple[str, list[str]]:
    """A fresh location with ``count`` batch operations (the last one failing as a whole); their names."""
    location = f"projects/ops-{next(_ids)}/locations/us-central1"
    queue = client.create_queue(parent=location, queue=tasks_v2.Queue(name=f"{location}/queues/q"))
    client.pause_queue(name=queue.name)
    names = []
    for index in range(count):
        url = "ftp://refused/" if index == count - 1 else "http://127.0.0.1:9/"
        request = {"parent": queue.name, "task": {"http_request": {"url": url}}}
        batch = client.batch_create_tasks(parent=queue.name, requests=[request])
        names.append(batch.operation.name)
    return location, names


def list_page(
    client: tasks_v2.CloudTasksClient, location: str, size: int, token: str = "", filter_text: str = ""
) -> operations_pb2.ListOperationsResponse:
    """One page of ListOperations through the transport's client (gRPC's has no page size: the stub)."""
    if isinstance(client.transport, CloudTasksGrpcTransport):
        request = operations_pb2.ListOperationsRequest(
            name=location, filter=filter_text, page_size=size, page_token=token
        )
        stub = operations_pb2_grpc.OperationsStub(client.transport.grpc_channel)
        try:
            page: operations_pb2.ListOperationsResponse = stub.ListOperations(request, timeout=10)
        except grpc.RpcError as error:  # raised as the client's own methods raise it
            raise from_grpc_error(error) from None
        return page
    rest: AbstractOperationsClient = client.transport.operations_client
    pager = rest.list_operations(location, filter_text, page_size=size, page_token=token)
    return next(iter(pager.pages))


def wait(client: tasks_v2.CloudTasksClient, runner_url: str, name: str) -> operations_pb2.Operation:
    """WaitOperation with a 5 s timeout: the stub on gRPC, ``POST {name}:wait`` on REST."""
    if isinstance(client.transport, CloudTasksGrpcTransport):
        request = operations_pb2.WaitOperationRequest(name=name, timeout=duration_pb2.Duration(seconds=5))
        answer: operations_pb2.Operation = operations_pb2_grpc.OperationsStub(
            client.transport.grpc_channel
        ).WaitOperation(request, timeout=10)
        return answer
    response = requests.post(f"{runner_url}/v2/{name}:wait", json={"timeout": "5s"}, timeout=10)
    response.raise_for_status()
    return json_format.Parse(response.content, operations_pb2.Operation())


def test_list_pages_filters_and_oldest_first(client: tasks_v2.CloudTasksClient) -> None:
    location, names = batches(client, 3)
    operations: OperationsClient | AbstractOperationsClient = client.transport.operations_client
    listed = list(operations.list_operations(location, ""))
    assert [operation.name for operation in listed] == names
    assert all(operation.done for operation in listed)
    assert listed[2].error.code == 10  # ABORTED: none of its requests succeeded
    assert [op.name for op in operations.list_operations(location, "done = true")] == names
    assert list(operations.list_operations(location, "done = false")) == []
    with pytest.raises(BadRequest) as unsupported:
        list(operations.list_operations(location, "metadata.state = SUCCEEDED"))
    assert 'Unsupported filter "metadata.state = SUCCEEDED"' in str(unsupported.value)

    first = list_page(client, location, 2)
    assert [operation.name for operation in first.operations] == names[:2]
    second = list_page(client, location, 2, first.next_page_token)
    assert [operation.name for operation in second.operations] == names[2:]
    assert second.next_page_token == ""
    with pytest.raises(BadRequest) as changed:
        list_page(client, location, 2, first.next_page_token, "done = true")
    assert "filter must not change" in str(changed.value)
    other = f"projects/ops-{next(_ids)}/locations/us-central1"
    assert list(operations.list_operations(other, "")) == []
    with pytest.raises(BadRequest):
        list_page(client, other, 2, first.next_page_token)  # a token of another location


def test_cancel_wait_and_delete(client: tasks_v2.CloudTasksClient, runner_url: str) -> None:
    location, (done, failed) = batches(client, 2)
    operations: OperationsClient | AbstractOperationsClient = client.transport.operations_client
    before = operations.get_operation(done)

    operations.cancel_operation(done)  # done already: nothing to stop, the result is kept
    assert operations.get_operation(done) == before
    assert before.HasField("response") and not before.HasField("error")
    assert wait(client, runner_url, done) == before
    assert wait(client, runner_url, failed).error.code == 10

    operations.delete_operation(done)
    with pytest.raises(NotFound) as gone:
        operations.get_operation(done)
    assert done in str(gone.value)
    assert [operation.name for operation in operations.list_operations(location, "")] == [failed]
    for call in (operations.delete_operation, operations.cancel_operation):
        with pytest.raises(NotFound):
            call(done)


def test_both_transports_answer_the_same_documents(runner_url: str) -> None:
    rest = tasks_v2.CloudTasksClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=runner_url),
    )
    channel = grpc.insecure_channel(runner_url.removeprefix("http://"))
    on_grpc = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))
    location, names = batches(rest, 2)
    answers = []
    for client in (rest, on_grpc):
        operations: OperationsClient | AbstractOperationsClient = client.transport.operations_client
        listed = [json_format.MessageToDict(op) for op in operations.list_operations(location, "")]
        got = [json_format.MessageToDict(operations.get_operation(name)) for name in names]
        answers.append((listed, got))
    channel.close()
    assert answers[0] == answers[1]
    assert [document["name"] for document in answers[0][0]] == names


def test_bad_inputs_name_the_field(runner_url: str) -> None:
    rest = tasks_v2.CloudTasksClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=runner_url),
    )
    location, (name,) = batches(rest, 1)
    base = f"{runner_url}/v2/{location}/operations"
    refused = {
        "pageSize=-1": "page_size must be between 0 and 1000",
        "pageSize=x": "page_size",
        "pageToken=garbage": "Invalid page token",
        "returnPartialSuccess=maybe": "return_partial_success",
        "filter=name%3Dx": "Unsupported filter",
    }
    for query, message in refused.items():
        answer = requests.get(f"{base}?{query}", timeout=10)
        assert answer.status_code == 400, query
        assert message in answer.json()["error"]["message"], query
    assert requests.get(f"{base}?pageSize=5000&returnPartialSuccess=true", timeout=10).json() == {
        "operations": [requests.get(f"{runner_url}/v2/{name}", timeout=10).json()]
    }  # a page size over the maximum is cut to it
    bad_wait = requests.post(f"{runner_url}/v2/{name}:wait", json={"timeout": "soon"}, timeout=10)
    assert bad_wait.status_code == 400 and "'timeout'" in bad_wait.json()["error"]["message"]
    bad_cancel = requests.post(f"{runner_url}/v2/{name}:cancel", json={"force": True}, timeout=10)
    assert bad_cancel.status_code == 400 and '"force"' in bad_cancel.json()["error"]["message"]
    assert requests.get(f"{runner_url}/v2/projects/p/operations", timeout=10).status_code == 404
    # The path names the operation: a ``name`` in the body is refused, as for every v2 method.
    for verb in ("wait", "cancel"):
        named = requests.post(f"{runner_url}/v2/{name}:{verb}", json={"name": "other"}, timeout=10)
        assert named.status_code == 400 and '"name"' in named.json()["error"]["message"], verb
    # A request id becomes the operation's id: one that no later call could name is refused.
    queue = f"{location}/queues/q"
    for request_id in ("x/y", "a:b", "z" * 501):
        batch = {"names": [f"{queue}/tasks/t"], "requestId": request_id}
        answer = requests.post(f"{runner_url}/v2/{queue}/tasks:batchDelete", json=batch, timeout=10)
        assert answer.status_code == 400 and "request_id" in answer.json()["error"]["message"], request_id
    assert [op["name"] for op in requests.get(base, timeout=10).json()["operations"]] == [name]
