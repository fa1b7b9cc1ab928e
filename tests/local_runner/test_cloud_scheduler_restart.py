"""Jobs, their last status and their attempt history survive a real ``runner serve`` restart."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from pytest_httpserver import HTTPServer
from testsupport.runner_process import RunnerProcess

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
    waited = threading.Event()
    for _ in range(2000):  # bounded wait for the forced attempt's outcome (real clock, real process)
        if "status" in get(first.url, JOB):
            break
        waited.wait(0.005)
    before = get(first.url, JOB)
    assert before["status"]["code"] == 14  # 503: UNAVAILABLE
    assert first.interrupt() == 0

    second = runner_process(tmp_path / "data")
    after = get(second.url, JOB)
    assert after == before
    attempts = get(second.url, f"{JOB}:attempts")["attempts"]
    assert [attempt["httpStatus"] for attempt in attempts] == [503]
