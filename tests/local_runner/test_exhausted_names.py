"""A task whose retries ran out: deleted for the API with its name tombstoned, kept for the runner's aids."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Response

from local_runner import errors
from local_runner.clock import VirtualClock
from local_runner.config import RunnerSettings
from local_runner.model import Queue, RetryConfig
from local_runner.server import RunnerServer

PARENT = "projects/p/locations/l"
QUEUE = f"{PARENT}/queues/exhausted"
TASK = f"{QUEUE}/tasks/welcome-42"
TOMBSTONE = 3600.0


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def runner(clock: VirtualClock, tmp_path: Path) -> Iterator[RunnerServer]:
    settings = RunnerSettings(port=0, data_dir=tmp_path, shutdown_grace=0.5, task_tombstone=TOMBSTONE)
    with RunnerServer(settings, clock=clock) as server:
        server.service.create_queue(PARENT, Queue(QUEUE, retry_config=RetryConfig(max_attempts=1)))
        yield server


def call(runner: RunnerServer, method: str, path: str, body: Any = None) -> requests.Response:
    return requests.request(method, f"{runner.base_url}/{path}", json=body, timeout=10)


def create(runner: RunnerServer, url: str) -> requests.Response:
    return call(runner, "POST", f"v2/{QUEUE}/tasks", {"task": {"name": TASK, "httpRequest": {"url": url}}})


def wait_idle(runner: RunnerServer) -> None:
    assert call(runner, "POST", "runner/v1/waitIdle", {"timeout": "10s"}).status_code == 200


def error(response: requests.Response) -> tuple[int, str, str]:
    body = response.json()["error"]
    return response.status_code, body["status"], body["message"]


def statuses(runner: RunnerServer) -> list[int]:
    history = call(runner, "GET", f"runner/v1/{TASK}:attempts").json().get("attempts", [])
    return [attempt["httpStatus"] for attempt in history]


def test_exhausted_name_is_tombstoned_for_the_window_then_free(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    answers = iter([500, 200])
    httpserver.expect_request("/x").respond_with_handler(lambda request: Response(status=next(answers)))
    url = httpserver.url_for("/x")
    assert create(runner, url).status_code == 200
    wait_idle(runner)  # one attempt, 500, no retries left

    gone = (404, "NOT_FOUND", errors.TASK_GONE)
    assert error(call(runner, "GET", f"v2/{TASK}")) == gone
    assert error(create(runner, url)) == (409, "ALREADY_EXISTS", errors.TASK_TOMBSTONED)
    assert error(call(runner, "DELETE", f"v2/{TASK}")) == (404, "NOT_FOUND", errors.ENTITY_NOT_FOUND)
    assert error(call(runner, "POST", f"v2/{TASK}:run")) == (404, "NOT_FOUND", errors.ENTITY_NOT_FOUND)
    assert call(runner, "GET", f"runner/v1/{TASK}").json()["state"] == "EXHAUSTED"
    assert statuses(runner) == [500]

    clock.advance(TOMBSTONE - 1)
    assert error(create(runner, url))[2] == errors.TASK_TOMBSTONED
    clock.advance(1)
    assert error(call(runner, "GET", f"v2/{TASK}")) == (404, "NOT_FOUND", errors.ENTITY_NOT_FOUND)
    assert call(runner, "GET", f"runner/v1/{TASK}").json()["state"] == "EXHAUSTED"  # kept until reused
    assert statuses(runner) == [500]

    assert create(runner, url).status_code == 200  # the name is free: the new task replaces the record
    wait_idle(runner)
    assert statuses(runner) == [200]
    assert error(call(runner, "GET", f"runner/v1/{TASK}")) == gone  # completed now


def test_replayed_exhausted_task_holds_its_name_again(runner: RunnerServer, httpserver: HTTPServer) -> None:
    httpserver.expect_request("/x").respond_with_handler(lambda request: Response(status=500))
    url = httpserver.url_for("/x")
    assert create(runner, url).status_code == 200
    wait_idle(runner)
    httpserver.clear()
    httpserver.expect_request("/x").respond_with_data("late", status=200)
    assert call(runner, "POST", f"runner/v1/{TASK}:replay").json()["state"] == "QUEUED"
    wait_idle(runner)
    assert statuses(runner) == [500, 200]
    assert error(create(runner, url))[2] == errors.TASK_TOMBSTONED  # tombstoned by its success
