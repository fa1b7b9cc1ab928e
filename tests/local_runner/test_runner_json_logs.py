"""``runner serve --log-format json``: one Cloud Logging JSON line per attempt, in the task's trace."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import requests
from pytest_httpserver import HTTPServer
from testsupport.runner_process import RunnerProcess

from tasktoolkit.client import TasksClient

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def _attempt_lines(runner: RunnerProcess, count: int) -> list[dict[str, Any]]:
    """The first ``count`` attempt lines (the process writes them as the attempts end)."""
    deadline = time.monotonic() + 20
    while True:
        lines = [json.loads(line) for line in list(runner.log) if line.startswith("{")]
        attempts = [line for line in lines if "logging.googleapis.com/labels" in line]
        if len(attempts) >= count or time.monotonic() > deadline:
            return attempts
        time.sleep(0.02)


def test_each_attempt_is_one_json_line_with_labels_and_trace(
    runner_process: Callable[..., RunnerProcess], httpserver: HTTPServer
) -> None:
    httpserver.expect_ordered_request("/hook").respond_with_data("busy", status=503)
    httpserver.expect_ordered_request("/hook").respond_with_data("ok")
    runner = runner_process(None, "--log-format", "json")
    with TasksClient("my-proj", "us-central1", endpoint=runner.url, environ={}) as client:
        client.ensure_queue("hooks", retry_config={"min_backoff": 0.1, "max_backoff": 0.1})
        client.enqueue(
            "hooks",
            url=httpserver.url_for("/hook"),
            name="t1",
            headers={"X-TaskToolkit-Traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        )
    idle = requests.post(f"{runner.url}/runner/v1/waitIdle", json={"timeout": "20s"}, timeout=30)
    assert idle.json() == {"idle": True}
    first, second = _attempt_lines(runner, 2)
    for line in (first, second):
        assert line["logging.googleapis.com/trace"] == f"projects/my-proj/traces/{TRACE_ID}"
        line["logging.googleapis.com/labels"].pop("latency_ms")
    assert (first["severity"], first["logging.googleapis.com/labels"]) == (
        "WARNING",
        {
            "queue": "hooks",
            "task": "t1",
            "attempt": "1",
            "retry_count": "0",
            "outcome": "retry",
            "status": "503",
        },
    )
    assert (second["severity"], second["logging.googleapis.com/labels"]) == (
        "INFO",
        {
            "queue": "hooks",
            "task": "t1",
            "attempt": "2",
            "retry_count": "1",
            "outcome": "done",
            "status": "200",
        },
    )
    assert second["message"].startswith("hooks/t1 attempt 2: HTTP 200 in ")
    assert all(line.startswith("{") for line in runner.log)  # every line is JSON, start-up included
