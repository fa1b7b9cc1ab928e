"""Duplicate delivery on purpose: ``--duplicate-deliveries RATE`` and ``duplicateDeliveries`` per queue."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from local_runner.clock import VirtualClock
from local_runner.codec.tasks import attempt_from_json, attempt_to_stored_json
from local_runner.config import ConfigError, RunnerSettings, load_queue_file
from local_runner.engine.duplicates import DuplicateDeliveries
from local_runner.errors import InvalidArgument
from local_runner.model import Attempt, HttpRequest, NewTask, RpcStatus
from local_runner.server import RunnerServer

PARENT = "projects/p/locations/l"


class Recorder:
    """A handler that answers 200 and keeps the X-CloudTasks-* headers of every request, per path."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.seen: dict[str, list[dict[str, str]]] = {}
        self._lock = threading.Lock()
        self.url = httpserver.url_for("/")
        httpserver.expect_request("/a").respond_with_handler(self.answer)
        httpserver.expect_request("/b").respond_with_handler(self.answer)

    def answer(self, request: Request) -> Response:
        with self._lock:
            headers = {
                k.lower(): v for k, v in request.headers.items() if k.lower().startswith("x-cloudtasks-")
            }
            self.seen.setdefault(request.path, []).append(headers)
        return Response(status=200)


def start(tmp_path: Path, rate: float, queues: str) -> RunnerServer:
    queue_file = tmp_path / "queues.yaml"
    queue_file.write_text(queues, encoding="utf-8")
    settings = RunnerSettings(
        port=0,
        data_dir=None,
        shutdown_grace=0.5,
        project="p",
        location="l",
        queues_file=queue_file,
        duplicate_deliveries=rate,
    )
    return RunnerServer(settings, clock=VirtualClock())


@pytest.fixture
def recorder(httpserver: HTTPServer) -> Iterator[Recorder]:
    yield Recorder(httpserver)


def run(runner: RunnerServer, recorder: Recorder, *queues: str) -> None:
    for queue in queues:
        runner.service.create_task(f"{PARENT}/queues/{queue}", NewTask(HttpRequest(url=recorder.url + queue)))
    idle = requests.post(f"{runner.base_url}/runner/v1/waitIdle", json={"timeout": "10s"}, timeout=20)
    assert idle.json() == {"idle": True}


def test_every_attempt_is_sent_twice_at_rate_1_and_recorded(tmp_path: Path, recorder: Recorder) -> None:
    name = f"{PARENT}/queues/a/tasks/twice"
    with start(tmp_path, 1.0, "- name: a\n") as runner:
        runner.service.create_task(
            f"{PARENT}/queues/a", NewTask(HttpRequest(url=recorder.url + "a"), name=name)
        )
        idle = requests.post(f"{runner.base_url}/runner/v1/waitIdle", json={"timeout": "10s"}, timeout=20)
        assert idle.json() == {"idle": True}
        history = requests.get(f"{runner.base_url}/runner/v1/{name}:attempts", timeout=10).json()
        gone = requests.get(f"{runner.base_url}/runner/v1/{name}", timeout=10)
    first, second = recorder.seen["/a"]
    assert first == second and first["x-cloudtasks-taskretrycount"] == "0"  # the same request, twice
    [attempt] = history["attempts"]
    assert attempt["httpStatus"] == 200 and attempt["duplicate"] == {"httpStatus": 200}
    assert gone.status_code == 404  # done: the first answer counts


def test_a_queue_file_rate_overrides_the_runners(tmp_path: Path, recorder: Recorder) -> None:
    with start(tmp_path, 0.0, "- name: a\n  duplicateDeliveries: 1\n- name: b\n") as runner:
        run(runner, recorder, "a", "b")
    assert (len(recorder.seen["/a"]), len(recorder.seen["/b"])) == (2, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("1.5", "duplicateDeliveries must be between 0 and 1 (a fraction of attempts); got 1.5."),
        ("-0.1", "duplicateDeliveries must be between 0 and 1 (a fraction of attempts); got -0.1."),
        ("often", "duplicateDeliveries must be a number between 0 and 1; got 'often'."),
        ("true", "duplicateDeliveries must be a number between 0 and 1; got True."),
    ],
)
def test_a_bad_rate_in_the_queue_file_names_the_queue_and_the_field(
    tmp_path: Path, value: str, message: str
) -> None:
    path = tmp_path / "queues.yaml"
    path.write_text(f"- name: a\n  duplicateDeliveries: {value}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_queue_file(path, PARENT)
    assert str(refused.value) == f"queue file {path}: queue '{PARENT}/queues/a': {message}"


def test_the_rate_is_a_fraction_of_attempts() -> None:
    with pytest.raises(InvalidArgument, match="duplicate deliveries must be between 0 and 1"):
        DuplicateDeliveries(2.0)
    never, always = DuplicateDeliveries(0.0), DuplicateDeliveries(0.0, {"q": 1.0})
    assert not any(never.chosen("q") for _ in range(100)) and all(always.chosen("q") for _ in range(100))
    some = DuplicateDeliveries(0.25, rng=random.Random(7))
    assert 150 < sum(some.chosen("q") for _ in range(1000)) < 350


@pytest.mark.parametrize("answer", [200, None])
def test_a_duplicated_attempt_is_stored_and_read_back(answer: int | None) -> None:
    attempt = Attempt(1.0, 2.0, 3.0, 500, RpcStatus(13, "HTTP status code 500"), True, answer)
    assert attempt_from_json(attempt_to_stored_json(attempt)) == attempt
    plain = Attempt(1.0, 2.0, 3.0, 200, RpcStatus(0, "OK"))
    assert "duplicate" not in attempt_to_stored_json(plain)
    assert attempt_from_json(attempt_to_stored_json(plain)) == plain
