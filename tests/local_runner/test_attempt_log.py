"""Attempt log lines: failures in full, successes in full while few, then one summary line per second."""

from __future__ import annotations

import asyncio
import logging

import pytest

from local_runner.attempt_log import FULL_SUCCESS_LINES, AttemptLog
from local_runner.clock import VirtualClock
from local_runner.engine.attempts import Outcome, decide
from local_runner.model import Attempt, HttpRequest, RetryConfig, Task

Q = "projects/p/locations/l/queues"


def claimed(queue_id: str, task_id: str) -> Task:
    return Task(
        name=f"{Q}/{queue_id}/tasks/{task_id}",
        http_request=HttpRequest(url="http://127.0.0.1:9/x"),
        schedule_time=100.0,
        create_time=100.0,
        dispatch_count=1,
        last_attempt=Attempt(100.0, 100.0),
    )


def finish(attempts: AttemptLog, queue_id: str, task_id: str, status: int, now: float) -> None:
    task = claimed(queue_id, task_id)
    outcome = Outcome(now, http_status=status)
    attempts.finished(
        task, outcome, decide(task, outcome, RetryConfig(), tombstone=3600.0), 0.004, recorded=True
    )


def messages(caplog: pytest.LogCaptureFixture) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "local_runner.dispatch"]


def test_a_busy_queue_gets_one_summary_line_per_second(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> list[tuple[str, str]]:
        clock = VirtualClock(start=1000.0)
        attempts = AttemptLog(clock)
        for i in range(FULL_SUCCESS_LINES + 25):
            finish(attempts, "busy", f"t{i}", 200, clock.now())
        finish(attempts, "busy", "bad", 503, clock.now())
        finish(attempts, "quiet", "q1", 200, clock.now())
        clock.advance(1.0)
        for _ in range(3):  # the summary is written when the second ends, with nothing else going on
            await asyncio.sleep(0)
        written = messages(caplog)
        await attempts.close()
        assert messages(caplog) == written  # nothing was left to write
        return written

    with caplog.at_level(logging.INFO, logger="local_runner.dispatch"):
        lines = asyncio.run(scenario())
    assert lines[:FULL_SUCCESS_LINES] == [
        ("INFO", f"busy/t{i} attempt 1: HTTP 200 in 4 ms; done") for i in range(FULL_SUCCESS_LINES)
    ]
    assert lines[FULL_SUCCESS_LINES:] == [
        ("WARNING", "busy/bad attempt 1: HTTP 503 in 4 ms; next retry in 0.1s"),  # each failure in full
        ("INFO", "quiet/q1 attempt 1: HTTP 200 in 4 ms; done"),
        ("INFO", "busy: 25 more attempt(s) succeeded in 1.0 s (latency mean 4 ms, max 4 ms)"),
    ]


def test_every_success_is_logged_in_full_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        attempts = AttemptLog(VirtualClock())
        for i in range(FULL_SUCCESS_LINES + 5):
            finish(attempts, "busy", f"t{i}", 200, 0.0)
        await attempts.close()

    with caplog.at_level(logging.DEBUG, logger="local_runner.dispatch"):
        asyncio.run(scenario())
    full = [m for _, m in messages(caplog) if "attempt 1: HTTP 200" in m]
    assert len(full) == FULL_SUCCESS_LINES + 5
    assert messages(caplog)[-1] == (
        "INFO",
        "busy: 5 more attempt(s) succeeded in 0 ms (latency mean 4 ms, max 4 ms)",
    )  # closed at once: the summary covers the time the window was open, not a whole second
