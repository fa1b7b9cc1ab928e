"""One application test, run against a real ``runner serve`` process and against FakeQueue.

The same enqueue code runs in both; the deliveries the handler receives must match field by field.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from flask import Flask, abort, request
from testsupport.runner_process import RunnerProcess

from tasktoolkit import TaskContext, TaskToolkit, task_handler
from tasktoolkit.dedup import MemoryDedupStore
from tasktoolkit.testing import FakeQueue

SA = "tasks@my-proj.iam.gserviceaccount.com"
#: Set by the HTTP stack, not by Cloud Tasks: left out of the comparison.
TRANSPORT_HEADERS = {"host", "content-length", "connection", "accept", "accept-encoding"}
Seen = list[dict[str, Any]]


def make_app(seen: Seen) -> Flask:
    app = Flask("same-app")
    app.config.update(
        TASKTOOLKIT_AUDIENCE="https://worker.test",
        TASKTOOLKIT_ALLOWED_SERVICE_ACCOUNTS=[SA],
        TASKTOOLKIT_PROJECT="my-proj",
        TASKTOOLKIT_LOCATION="us-central1",
    )
    TaskToolkit(app, store=MemoryDedupStore())

    @app.post("/signup")
    def signup() -> dict[str, str]:
        task = resize.enqueue(
            {"image": "cat.png"},
            route_args={"size": "64"},
            dedup_key="resize:cat:64",
            headers={"X-Trace": "t-1"},
        )
        assert task is not None
        return {"task": task.id}

    @app.post("/tasks/resize/<size>")
    @task_handler(queue="images")
    def resize(payload: Any, task: TaskContext, size: str) -> dict[str, str]:
        seen.append(
            {
                "method": request.method,
                "path": request.path,
                "body": request.get_data(),
                "headers": {k.lower(): v for k, v in request.headers.items()},
            }
        )
        if task.retry_count == 0:
            abort(503)
        return {"size": size}

    return app


def scenario(app: Flask) -> None:
    """The application code under test: set up the queue and sign a user up."""
    with app.app_context():
        TaskToolkit.client(app).ensure_queue("images", retry_config={"min_backoff": 1, "max_attempts": 5})
    assert app.test_client().post("/signup").status_code == 200


@pytest.fixture
def runner() -> Iterator[RunnerProcess]:
    process = RunnerProcess(None).start()
    yield process
    process.close()


def claims(authorization: str) -> dict[str, Any]:
    payload = authorization.removeprefix("Bearer ").split(".")[1]
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data


def test_runner_and_fake_deliver_the_same_requests(
    runner: RunnerProcess, serve: Callable[[Flask], Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    faked: Seen = []
    app = make_app(faked)
    fake = FakeQueue(app)
    scenario(app)
    fake.run_until_idle()

    monkeypatch.setenv("CLOUD_TASKS_EMULATOR_HOST", runner.url.removeprefix("http://"))
    real: Seen = []
    app = make_app(real)
    app.config["TASKTOOLKIT_BASE_URL"] = serve(app).url
    scenario(app)
    idle = requests.post(
        f"{runner.url}/runner/v1/waitIdle",
        json={"queue": "projects/my-proj/locations/us-central1/queues/images", "timeout": "30s"},
        timeout=40,
    )
    assert idle.json() == {"idle": True}

    assert len(real) == len(faked) == 2
    for got, expected in zip(real, faked, strict=True):
        assert (got["method"], got["path"], got["body"]) == (
            expected["method"],
            expected["path"],
            expected["body"],
        )
        got_headers = {k: v for k, v in got["headers"].items() if k not in TRANSPORT_HEADERS}
        expected_headers = {k: v for k, v in expected["headers"].items() if k not in TRANSPORT_HEADERS}
        assert set(got_headers) == set(expected_headers)
        for name in set(got_headers) - {"x-cloudtasks-tasketa", "authorization"}:
            assert (name, got_headers[name]) == (name, expected_headers[name])
        for value in (got_headers["x-cloudtasks-tasketa"], expected_headers["x-cloudtasks-tasketa"]):
            assert re.fullmatch(r"\d{10}\.\d{6}", value)
        real_claims, fake_claims = (
            claims(got_headers["authorization"]),
            claims(expected_headers["authorization"]),
        )
        assert set(real_claims) == set(fake_claims)
        for name in ("aud", "email", "email_verified"):
            assert real_claims[name] == fake_claims[name]
    assert real[1]["headers"]["x-cloudtasks-taskretrycount"] == "1"
    assert real[1]["headers"]["x-cloudtasks-taskpreviousresponse"] == "503"
