"""Contract fixtures: a real ``runner serve`` process for the official client to talk to."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2
from google.cloud.tasks_v2.services.cloud_tasks.transports import CloudTasksGrpcTransport
from testsupport.runner_process import RunnerProcess


@pytest.fixture(scope="module")
def runner_url() -> Iterator[str]:
    """``python -m local_runner serve --port 0 --in-memory`` as a child process; yields its URL."""
    process = RunnerProcess(None).start()
    yield process.url
    process.close()


@pytest.fixture(scope="module", params=["rest", "grpc"])
def client(request: pytest.FixtureRequest, runner_url: str) -> Iterator[tasks_v2.CloudTasksClient]:
    """The official client pointed at that process, on each transport (the same port serves both).

    ``rest``: the REST transport with no credentials; ``grpc``: the default transport on an insecure
    channel, exactly as docs/connect-your-client.md shows.
    """
    yield from official_client(tasks_v2.CloudTasksClient, CloudTasksGrpcTransport, request.param, runner_url)


def official_client(client_class: Any, grpc_transport: Any, kind: str, runner_url: str) -> Iterator[Any]:
    """An official client on ``kind`` ("rest" or "grpc") at ``runner_url``, closed after use."""
    if kind == "rest":
        yield client_class(
            transport="rest",
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=runner_url),
        )
        return
    channel = grpc.insecure_channel(runner_url.removeprefix("http://"))
    yield client_class(transport=grpc_transport(channel=channel))
    channel.close()
