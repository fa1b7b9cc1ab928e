"""gRPC and REST on one port: the same answers, and bad gRPC input refused without harm."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Iterator

import grpc
import pytest
import requests
from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import ServiceUnavailable
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import (
    CloudTasksGrpcAsyncIOTransport,
    CloudTasksGrpcTransport,
)
from google.protobuf import json_format

from local_runner.api.grpc_methods import METHODS
from local_runner.api.protocol_sniffer import HTTP2_PREFACE
from local_runner.config import RunnerSettings
from local_runner.server import RunnerServer

PARENT = "projects/grpc-front/locations/us-central1"
CREATE_TASK = "/google.cloud.tasks.v2.CloudTasks/CreateTask"


@pytest.fixture(scope="module")
def runner() -> Iterator[RunnerServer]:
    with RunnerServer(RunnerSettings(port=0, data_dir=None)) as server:
        yield server


@pytest.fixture(scope="module")
def address(runner: RunnerServer) -> str:
    return runner.base_url.removeprefix("http://")


@pytest.fixture(scope="module")
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as opened:
        yield opened


@pytest.fixture(scope="module")
def client(channel: grpc.Channel) -> tasks_v2.CloudTasksClient:
    return tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=channel))


@pytest.fixture
def quiet(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Fails the test if the runner logged an error or a traceback."""
    caplog.set_level(logging.INFO)
    yield caplog
    loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert loud == []


def raw_call(channel: grpc.Channel, path: str, payload: bytes) -> grpc.RpcError:
    call = channel.unary_unary(path)
    with pytest.raises(grpc.RpcError) as failed:
        call(payload, timeout=10)
    return failed.value


def a_queue(client: tasks_v2.CloudTasksClient, queue_id: str) -> tasks_v2.Queue:
    return client.create_queue(parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/{queue_id}"))


def test_rest_and_grpc_on_one_port_give_the_same_documents(
    client: tasks_v2.CloudTasksClient, runner: RunnerServer, quiet: pytest.LogCaptureFixture
) -> None:
    queue = a_queue(client, "same-port")
    with requests.Session() as rest:  # one keep-alive connection, several calls
        over_rest = rest.get(f"{runner.base_url}/v2/{queue.name}").json()
        assert over_rest == json_format.MessageToDict(tasks_v2.Queue.pb(queue))
        assert rest.post(f"{runner.base_url}/v2/{queue.name}:pause").json()["state"] == "PAUSED"
        created = rest.post(
            f"{runner.base_url}/v2/{queue.name}/tasks",
            json={"task": {"httpRequest": {"url": "http://127.0.0.1:9/"}}},
        ).json()
    listed = client.list_tasks(parent=queue.name)
    assert [json_format.MessageToDict(tasks_v2.Task.pb(task)) for task in listed] == [created]


def test_unparseable_request_is_invalid_argument(
    channel: grpc.Channel, client: tasks_v2.CloudTasksClient, quiet: pytest.LogCaptureFixture
) -> None:
    error = raw_call(channel, CREATE_TASK, b"\xff\xff\xff not a protobuf")
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid google.cloud.tasks.v2.CreateTaskRequest" in str(error.details())
    assert a_queue(client, "after-garbage").state == tasks_v2.Queue.State.RUNNING


def test_unknown_methods_are_unimplemented(channel: grpc.Channel, quiet: pytest.LogCaptureFixture) -> None:
    for path in (
        "/google.cloud.tasks.v2beta3.CloudTasks/CreateTask",
        "/google.cloud.tasks.v2.CloudTasks/LeaseTasks",
        "/google.longrunning.Operations/WatchOperation",
    ):
        error = raw_call(channel, path, b"")
        assert error.code() is grpc.StatusCode.UNIMPLEMENTED, path
        assert "google.cloud.tasks.v2.CloudTasks" in str(error.details())
    raw_call(channel, "/google.cloud.tasks.v2beta3.CloudTasks/GetQueue", b"")
    hints = [r.getMessage() for r in quiet.records if "which is not served" in r.getMessage()]
    assert len(hints) == 3  # one per service, not per call
    assert "google.cloud.tasks.v2beta3.CloudTasks/CreateTask" in hints[0]


def test_values_without_a_json_form_and_bad_names_name_the_field(
    channel: grpc.Channel, client: tasks_v2.CloudTasksClient, quiet: pytest.LogCaptureFixture
) -> None:
    queue = a_queue(client, "bad-values")
    request = tasks_v2.CreateTaskRequest.pb()(parent=queue.name)
    request.task.http_request.url = "http://127.0.0.1:9/"
    request.task.schedule_time.seconds = 10**13
    error = raw_call(channel, CREATE_TASK, request.SerializeToString())
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "schedule_time" in str(error.details())

    request = tasks_v2.CreateTaskRequest.pb()(parent=f"{queue.name}/tasks/t")
    error = raw_call(channel, CREATE_TASK, request.SerializeToString())
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "parent" in str(error.details()) and "projects/*/locations/*/queues/*" in str(error.details())

    with pytest.raises(Exception) as rate:
        client.update_queue(
            queue=tasks_v2.Queue(name=queue.name, rate_limits={"max_dispatches_per_second": 501})
        )
    assert "RateLimits.maxDispatchesPerSecond must be less than or equal to 500." in str(rate.value)


def send_and_close(address: str, payload: bytes, half_close: bool = True) -> bytes:
    """Send raw bytes on a fresh connection; return what the runner answered before it closed."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def test_broken_connections_leave_the_server_up(
    address: str, client: tasks_v2.CloudTasksClient, quiet: pytest.LogCaptureFixture
) -> None:
    send_and_close(address, HTTP2_PREFACE + b"\x00\x00\x04\xff garbage frames " * 20)
    send_and_close(address, HTTP2_PREFACE[:10])
    send_and_close(address, b"")
    http = b"GET /v2/nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    assert send_and_close(address, http, half_close=False).startswith(b"HTTP/1.1 404")
    assert a_queue(client, "still-up").state == tasks_v2.Queue.State.RUNNING


def test_a_tls_client_gets_a_one_line_hint(
    address: str, client: tasks_v2.CloudTasksClient, quiet: pytest.LogCaptureFixture
) -> None:
    secure = tasks_v2.CloudTasksClient(  # the default transport with an endpoint: TLS
        credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=address)
    )
    with pytest.raises(ServiceUnavailable):
        secure.get_queue(name=f"{PARENT}/queues/any", retry=None, timeout=5)
    for _ in range(100):  # the hint is logged on the runner's thread; bounded wait for it
        if any("TLS" in r.getMessage() for r in quiet.records):
            break
        time.sleep(0.02)
    hints = [r for r in quiet.records if "TLS" in r.getMessage()]
    assert len(hints) == 1
    assert "insecure channel" in hints[0].getMessage()
    assert a_queue(client, "after-tls").state == tasks_v2.Queue.State.RUNNING


def test_grpc_over_http1_gets_a_404_and_a_hint(address: str, quiet: pytest.LogCaptureFixture) -> None:
    request = (
        b"POST /google.cloud.tasks.v2.CloudTasks/GetQueue HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/grpc-web\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert send_and_close(address, request, half_close=False).startswith(b"HTTP/1.1 404")
    hints = [r.getMessage() for r in quiet.records if "over HTTP/1.1" in r.getMessage()]
    assert len(hints) == 1 and "HTTP/2" in hints[0]


def test_random_bytes_to_every_method_never_fail_inside(
    channel: grpc.Channel, client: tasks_v2.CloudTasksClient, quiet: pytest.LogCaptureFixture
) -> None:
    rnd = random.Random(14)
    seen: set[grpc.StatusCode] = set()
    for index in range(300):  # bounded: 300 calls, about 0.3 s
        method = METHODS[index % len(METHODS)]
        payload = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0, 48)))
        try:
            channel.unary_unary(method.full_name)(payload, timeout=10)
        except grpc.RpcError as error:
            seen.add(error.code())
    assert seen <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    assert a_queue(client, "after-random-bytes").state == tasks_v2.Queue.State.RUNNING


def test_the_asyncio_client(address: str, quiet: pytest.LogCaptureFixture) -> None:
    async def scenario() -> tasks_v2.Queue:
        async with grpc.aio.insecure_channel(address) as opened:
            client = tasks_v2.CloudTasksAsyncClient(transport=CloudTasksGrpcAsyncIOTransport(channel=opened))
            queue = await client.create_queue(
                parent=PARENT, queue=tasks_v2.Queue(name=f"{PARENT}/queues/from-asyncio")
            )
            return await client.get_queue(name=queue.name)

    assert asyncio.run(scenario()).state == tasks_v2.Queue.State.RUNNING


def test_stopping_the_runner_with_grpc_clients_connected(quiet: pytest.LogCaptureFixture) -> None:
    server = RunnerServer(RunnerSettings(port=0, data_dir=None, shutdown_grace=0.1)).start()
    with grpc.insecure_channel(server.base_url.removeprefix("http://")) as opened:
        connected = tasks_v2.CloudTasksClient(transport=CloudTasksGrpcTransport(channel=opened))
        assert a_queue(connected, "before-stop").state == tasks_v2.Queue.State.RUNNING
        server.stop()  # returns: neither the handler threads nor the open connection hold it
        with pytest.raises(ServiceUnavailable):
            connected.get_queue(name=f"{PARENT}/queues/before-stop", retry=None, timeout=5)
