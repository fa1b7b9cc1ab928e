"""The log lines of dispatch attempts: every failure in full, successes in full while they are few.

A queue's first :data:`FULL_SUCCESS_LINES` successes of each second are logged one line each at INFO;
the others of that second are summed up in one INFO line when it ends (each is still logged in full
at DEBUG, ``runner serve -v``). So a queue dispatching hundreds of tasks a second writes a dozen lines
a second, and a handful of tasks reads exactly as one line per attempt.
"""

from __future__ import annotations

import asyncio
import logging

from local_runner.clock import Clock
from local_runner.dispatch import format_latency
from local_runner.engine.attempts import FinishedAttempt, Outcome
from local_runner.log_format import FIELDS_ATTRIBUTE, trace_name
from local_runner.model import Task

log = logging.getLogger("local_runner.dispatch")
#: Successes of one queue logged one line each per :data:`SUMMARY_INTERVAL`; the rest are summed up.
FULL_SUCCESS_LINES = 10
#: Seconds each summary line covers.
SUMMARY_INTERVAL = 1.0


class _Window:
    """One queue's successes since ``start``: how many were logged in full, and those summed up."""

    __slots__ = ("latency_max", "latency_sum", "logged", "start", "summed")

    def __init__(self, start: float) -> None:
        self.start = start
        self.logged = 0
        self.summed = 0
        self.latency_sum = 0.0
        self.latency_max = 0.0


class AttemptLog:
    """Writes the lines of finished attempts; one per runner, on its event loop."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._windows: dict[str, _Window] = {}
        self._flushes: set[asyncio.Task[None]] = set()

    def finished(
        self, task: Task, outcome: Outcome, finished: FinishedAttempt, latency: float, recorded: bool
    ) -> None:
        """Log an attempt that ended: a failure always in full, a success in full or summed up."""
        if not outcome.succeeded:
            _write(logging.WARNING, task, outcome, finished, latency, recorded)
            return
        queue_id = task.queue_name.rpartition("/")[2]
        now = self.clock.now()
        window = self._windows.get(queue_id)
        if window is None or now >= window.start + SUMMARY_INTERVAL:
            if window is not None:
                _summarize(queue_id, window, SUMMARY_INTERVAL)
            window = self._windows[queue_id] = _Window(now)
        if window.logged < FULL_SUCCESS_LINES:
            window.logged += 1
            _write(logging.INFO, task, outcome, finished, latency, recorded)
            return
        window.summed += 1
        window.latency_sum += latency
        window.latency_max = max(window.latency_max, latency)
        if window.summed == 1:  # the summary is due when the window ends, even if nothing follows
            flush = asyncio.create_task(self._summarize_at(queue_id, window))
            self._flushes.add(flush)
            flush.add_done_callback(self._flushes.discard)
        if log.isEnabledFor(logging.DEBUG):
            _write(logging.DEBUG, task, outcome, finished, latency, recorded)

    async def _summarize_at(self, queue_id: str, window: _Window) -> None:
        await self.clock.sleep_until(window.start + SUMMARY_INTERVAL)
        _summarize(queue_id, window, SUMMARY_INTERVAL)

    async def close(self) -> None:
        """Write the summaries still open (the runner is stopping)."""
        for flush in list(self._flushes):
            flush.cancel()
        now = self.clock.now()
        for queue_id, window in self._windows.items():
            _summarize(queue_id, window, min(SUMMARY_INTERVAL, max(0.0, now - window.start)))


def _summarize(queue_id: str, window: _Window, elapsed: float) -> None:
    """The window's summary line, once (none if no success was summed up); ``elapsed``: its length."""
    if window.summed:
        log.info(
            "%s: %d more attempt(s) succeeded in %s (latency mean %s, max %s)",
            queue_id,
            window.summed,
            format_latency(elapsed),
            format_latency(window.latency_sum / window.summed),
            format_latency(window.latency_max),
        )
        window.summed = 0


def _after(task: Task, finished: FinishedAttempt, recorded: bool) -> tuple[str, str]:
    """What follows the attempt: its ``outcome`` label and its words."""
    if not recorded:
        return "gone", "task was deleted or purged meanwhile"
    if finished.deletes:
        return "done", "done"
    if finished.next_retry_in is None:
        return "exhausted", f"retries exhausted after {task.dispatch_count} attempt(s)"
    return "retry", f"next retry in {finished.next_retry_in:g}s"


def _write(
    level: int, task: Task, outcome: Outcome, finished: FinishedAttempt, latency: float, recorded: bool
) -> None:
    """The attempt's line, with its fields for ``--log-format json``."""
    queue_id = task.queue_name.rpartition("/")[2]
    result = (
        f"HTTP {outcome.http_status}" if outcome.http_status is not None else f"no response, {outcome.detail}"
    )
    label, after = _after(task, finished, recorded)
    took = format_latency(latency)
    labels = {
        "queue": queue_id,
        "task": task.task_id,
        "attempt": str(task.dispatch_count),
        "retry_count": str(task.dispatch_count - 1),
        "outcome": label,
        "latency_ms": f"{latency * 1000:.1f}",
    }
    if outcome.http_status is not None:
        labels["status"] = str(outcome.http_status)
    fields = {"labels": labels, "trace": trace_name(task.name, task.http_request.headers)}
    log.log(
        level,
        "%s/%s attempt %d: %s in %s; %s",
        queue_id,
        task.task_id,
        task.dispatch_count,
        result,
        took,
        after,
        extra={FIELDS_ATTRIBUTE: fields},
    )
