"""Jobs, their last status and their attempt history survive a real ``runner serve`` restart or crash."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from pytest_httpserver import HTTPServer
from testsupport.runner_process import RunnerProcess
from werkzeug import Request, Response

from tests.local_runner.test_dispatch_http import eventually

JOB = "projects/local-project/locations/us-central1/jobs/yearly"


def get(url: str, path: str) -> dict[str, Any]:
    response = requests.get(f"{url}/v1/{path}", timeout=10)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_job_and_last_status_survive_a_restart(
    tmp_path: Path, runner_process: Callable[..., RunnerProcess], httpserver: HTTPServer
) -> None:
    httpserver.expect_request("/fails").respond_with_data("no", status=503)
    first = runner_process(tmp_path / "data")
    body = {
        "name": JOB,
        "schedule": "0 0 1 1 *",  # far from now: the restart must not fire it
        "timeZone": "Asia/Tokyo",
        "httpTarget": {"uri": httpserver.url_for("/fails")},
    }
    created = requests.post(
        f"{first.url}/v1/projects/local-project/locations/us-central1/jobs", json=body, timeout=10
    )
    assert created.status_code == 200, created.text
    assert requests.post(f"{first.url}/v1/{JOB}:run", timeout=10).status_code == 200
    eventually(lambda: "status" in get(first.url, JOB))  # the forced attempt's outcome
    before = get(first.url, JOB)
    assert before["status"]["code"] == 14  # 503: UNAVAILABLE
    assert first.interrupt() == 0

    second = runner_process(tmp_path / "data")
    after = get(second.url, JOB)
    assert after == before
    attempts = get(second.url, f"{JOB}:attempts")["attempts"]
    assert [attempt["httpStatus"] for attempt in attempts] == [503]


def test_a_fire_cut_short_by_a_crash_is_attempted_again_after_restart(
    tmp_path: Path, runner_process: Callable[..., RunnerProcess]
) -> None:
    arrived: list[dict[str, str]] = []
    release = threading.Event()
    first_arrived = threading.Event()

    def handler(request: Request) -> Response:
        arrived.append(dict(request.headers))
        first_arrived.set()
        release.wait(20)  # the first attempt hangs until the runner is gone
        return Response("ok")

    server = HTTPServer(threaded=True)
    server.expect_request("/slow").respond_with_handler(handler)
    server.start()
    try:
        first = runner_process(tmp_path / "data")
        body = {"name": JOB, "schedule": "0 0 1 1 *", "httpTarget": {"uri": server.url_for("/slow")}}
        requests.post(
            f"{first.url}/v1/projects/local-project/locations/us-central1/jobs", json=body, timeout=10
        )
        assert requests.post(f"{first.url}/v1/{JOB}:run", timeout=10).status_code == 200
        assert first_arrived.wait(10)
        first.kill()  # SIGKILL while the attempt is in flight
        release.set()
        second = runner_process(tmp_path / "data")
        eventually(lambda: len(arrived) == 2)  # the attempt after the restart
        # The same execution again: the same schedule time, so a handler can tell it is a retry.
        assert arrived[0]["X-Cloudscheduler-Scheduletime"] == arrived[1]["X-Cloudscheduler-Scheduletime"]
        eventually(lambda: get(second.url, JOB).get("status") == {})
    finally:
        release.set()
        server.clear()
        server.stop()
