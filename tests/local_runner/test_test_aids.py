"""The runner's test aids under /runner/v1/: wait until idle, replay, reset, the virtual clock."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from local_runner.clock import VirtualClock
from local_runner.config import RunnerSettings
from local_runner.model import HttpRequest, NewTask, Queue, RetryConfig
from local_runner.server import RunnerServer

PARENT = "projects/p/locations/l"
QUEUE = f"{PARENT}/queues/aids"


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def runner(clock: VirtualClock) -> Iterator[RunnerServer]:
    with RunnerServer(RunnerSettings(port=0, data_dir=None, shutdown_grace=0.5), clock=clock) as server:
        server.service.create_queue(PARENT, Queue(QUEUE, retry_config=RetryConfig(max_attempts=1)))
        yield server


def post(runner: RunnerServer, path: str, body: dict[str, object] | None = None) -> requests.Response:
    return requests.post(f"{runner.base_url}/runner/v1/{path}", json=body or {}, timeout=10)


def test_wait_idle_returns_when_the_queue_has_drained(runner: RunnerServer, httpserver: HTTPServer) -> None:
    gate = threading.Event()

    def slow(request: Request) -> Response:
        gate.wait(5)
        return Response(status=200)

    httpserver.expect_request("/w").respond_with_handler(slow)
    runner.service.create_task(QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/w"))))
    busy = post(runner, "waitIdle", {"queue": QUEUE, "timeout": "0.2s"})
    assert busy.status_code == 504
    assert busy.json()["error"]["status"] == "DEADLINE_EXCEEDED"
    gate.set()
    done = post(runner, "waitIdle", {"queue": QUEUE, "timeout": "10s"})
    assert done.status_code == 200 and done.json() == {"idle": True}
    assert runner.service.list_tasks(QUEUE).items == []


def test_wait_idle_within_ignores_tasks_scheduled_later(runner: RunnerServer, clock: VirtualClock) -> None:
    runner.service.create_task(
        QUEUE, NewTask(HttpRequest(url="http://127.0.0.1:9/x"), schedule_time=clock.now() + 3600)
    )
    assert post(runner, "waitIdle", {"timeout": "0s"}).status_code == 504
    assert post(runner, "waitIdle", {"timeout": "0s", "within": "60s"}).json() == {"idle": True}


def test_wait_idle_validates_its_arguments(runner: RunnerServer) -> None:
    answer = post(runner, "waitIdle", {"timeout": "999s"})
    assert (
        answer.status_code == 400
        and "timeout must be between 0s and 300s" in answer.json()["error"]["message"]
    )
    missing = post(runner, "waitIdle", {"queue": f"{PARENT}/queues/missing", "timeout": "0s"})
    assert missing.status_code == 404


def test_exhausted_task_is_kept_and_can_be_replayed(runner: RunnerServer, httpserver: HTTPServer) -> None:
    answers = iter([500, 200])
    httpserver.expect_request("/x").respond_with_handler(lambda r: Response(status=next(answers)))
    task = runner.service.create_task(QUEUE, NewTask(HttpRequest(url=httpserver.url_for("/x"))))
    assert post(runner, "waitIdle", {"timeout": "10s"}).status_code == 200
    assert (
        requests.get(f"{runner.base_url}/v2/{task.name}", timeout=10).status_code == 404
    )  # as the real service
    exhausted = requests.get(f"{runner.base_url}/runner/v1/{QUEUE}/tasks?exhausted=true", timeout=10).json()
    assert [t["state"] for t in exhausted["tasks"]] == ["EXHAUSTED"]
    replayed = post(runner, f"{task.name}:replay")
    assert replayed.status_code == 200 and replayed.json()["state"] == "QUEUED"
    assert post(runner, "waitIdle", {"timeout": "10s"}).status_code == 200
    history = requests.get(f"{runner.base_url}/runner/v1/{task.name}:attempts", timeout=10).json()["attempts"]
    assert [a["httpStatus"] for a in history] == [500, 200]
    again = post(runner, f"{task.name}:replay")
    assert again.status_code == 400 and again.json()["error"]["status"] == "FAILED_PRECONDITION"


def test_reset_deletes_everything(runner: RunnerServer, clock: VirtualClock) -> None:
    runner.service.create_task(
        QUEUE, NewTask(HttpRequest(url="http://127.0.0.1:9/x"), schedule_time=clock.now() + 60)
    )
    assert post(runner, "reset").status_code == 200
    assert requests.get(f"{runner.base_url}/v2/{PARENT}/queues", timeout=10).json() == {}
    runner.service.create_queue(PARENT, Queue(QUEUE))  # the name is free again: no tombstone


def test_state_changing_aids_can_be_disabled(clock: VirtualClock) -> None:
    settings = RunnerSettings(port=0, data_dir=None, shutdown_grace=0.5, test_aids=False)
    with RunnerServer(settings, clock=clock) as runner:
        runner.service.create_queue(PARENT, Queue(QUEUE))
        refused = post(runner, "reset")
        assert refused.status_code == 403 and refused.json()["error"]["status"] == "PERMISSION_DENIED"
        assert runner.service.get_queue(QUEUE).name == QUEUE
        assert post(runner, "waitIdle", {"timeout": "1s"}).status_code == 200


def test_wait_idle_refuses_a_queue_that_is_not_a_string(runner: RunnerServer) -> None:
    answer = post(runner, "waitIdle", {"queue": 123, "timeout": "0s"})
    assert answer.status_code == 400 and answer.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_reset_then_recreate_starts_with_a_fresh_bucket(
    runner: RunnerServer, clock: VirtualClock, httpserver: HTTPServer
) -> None:
    from local_runner.model import RateLimits

    seen: list[str] = []
    httpserver.expect_request("/b").respond_with_handler(
        lambda r: seen.append(r.path) or Response(status=200)
    )
    queue = Queue(f"{PARENT}/queues/bucket", rate_limits=RateLimits(max_dispatches_per_second=1))
    runner.service.create_queue(PARENT, queue)
    for _ in range(10):  # empty the bucket (10 tokens at 1/s)
        runner.service.create_task(queue.name, NewTask(HttpRequest(url=httpserver.url_for("/b"))))
    assert post(runner, "waitIdle", {"queue": queue.name, "timeout": "10s"}).status_code == 200
    runner.service.reset()
    runner.service.create_queue(PARENT, queue)
    runner.service.create_task(queue.name, NewTask(HttpRequest(url=httpserver.url_for("/b"))))
    # Without advancing the clock: only a fresh bucket has a token for it.
    assert post(runner, "waitIdle", {"queue": queue.name, "timeout": "10s"}).status_code == 200
    assert len(seen) == 11


def test_a_virtual_clock_is_read_and_moved_over_http(runner: RunnerServer, clock: VirtualClock) -> None:
    start = clock.now()
    now = requests.get(f"{runner.base_url}/runner/v1/clock", timeout=10).json()
    assert now == {"now": "2023-11-14T22:13:20Z", "virtual": True}
    assert post(runner, "clock:advance", {"by": "90s"}).json()["now"] == "2023-11-14T22:14:50Z"
    assert post(runner, "clock:advance", {"to": "2023-11-15T00:00:00Z"}).status_code == 200
    assert clock.now() == start + 6400
    refused = [
        post(runner, "clock:advance", {"to": "2023-11-14T00:00:00Z"}),
        post(runner, "clock:advance", {}),
        post(runner, "clock:advance", {"by": "1s", "to": "2023-11-16T00:00:00Z"}),
        post(runner, "clock:advance", {"by": "soon"}),
    ]
    assert [r.status_code for r in refused] == [400, 400, 400, 400]
    assert refused[0].json()["error"]["message"] == "The clock cannot go back: it is 2023-11-15T00:00:00Z."
    assert clock.now() == start + 6400


def test_the_real_clock_cannot_be_moved() -> None:
    with RunnerServer(RunnerSettings(port=0, data_dir=None, shutdown_grace=0.5)) as server:
        assert requests.get(f"{server.base_url}/runner/v1/clock", timeout=10).json()["virtual"] is False
        refused = post(server, "clock:advance", {"by": "1s"})
    assert refused.status_code == 400
    assert refused.json()["error"]["status"] == "FAILED_PRECONDITION"
    assert "--virtual-clock" in refused.json()["error"]["message"]


def test_moving_the_clock_is_a_state_changing_aid(clock: VirtualClock) -> None:
    settings = RunnerSettings(port=0, data_dir=None, shutdown_grace=0.5, test_aids=False)
    with RunnerServer(settings, clock=clock) as server:
        refused = post(server, "clock:advance", {"by": "1s"})
    assert refused.status_code == 403 and clock.now() == 1_700_000_000.0
