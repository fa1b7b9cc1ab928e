"""Contract fixtures: a real ``runner serve`` process for the official client to talk to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import tasks_v2
from testsupport.runner_process import RunnerProcess


@pytest.fixture(scope="module")
def runner_url() -> Iterator[str]:
    """``python -m local_runner serve --port 0 --in-memory`` as a child process; yields its URL."""
    process = RunnerProcess(None).start()
    yield process.url
    process.close()


@pytest.fixture(scope="module")
def client(runner_url: str) -> tasks_v2.CloudTasksClient:
    """The official client (REST transport, no credentials) pointed at that process."""
    return tasks_v2.CloudTasksClient(
        transport="rest",
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=runner_url),
    )
