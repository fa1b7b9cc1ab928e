"""What each console page shows, read through the service layer (the same reads as the APIs)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

from local_runner.console.chart import Chart, bar_chart
from local_runner.console.payload import Payload, decode_payload
from local_runner.console.stats import CHART_BAR, OutcomeLog, QueueStats, queue_stats
from local_runner.engine.delivery import build_request
from local_runner.engine.pacing import QueuePacer
from local_runner.errors import NotFound
from local_runner.model import Attempt, Queue, Task, TaskState, parse_task_name
from local_runner.service import TasksService

#: Tasks per page of the queue page.
PAGE_SIZE = 50
#: The queue page's filters: query value -> (label, state listed; ``None``: every state, by name).
FILTERS: dict[str, tuple[str, TaskState | None]] = {
    "": ("All", None),
    "queued": ("Queued", TaskState.QUEUED),
    "dispatching": ("In flight", TaskState.DISPATCHING),
    "exhausted": ("Exhausted", TaskState.EXHAUSTED),
}


@dataclass(frozen=True)
class QueueRow:
    """A queue with its stats and chart."""

    queue: Queue
    stats: QueueStats
    chart: Chart


@dataclass(frozen=True)
class AttemptRow:
    """One finished attempt as the task page shows it."""

    number: int
    attempt: Attempt
    latency: float | None
    #: The start of the response body, as text (``None`` once the runner no longer keeps it).
    response: str | None
    #: The ``X-CloudTasks-*`` headers it sent (empty once the runner no longer keeps them).
    sent: list[tuple[str, str]]


@dataclass(frozen=True)
class TaskDetail:
    """Everything the task page shows."""

    name: str
    #: ``None`` once the task succeeded or was deleted (its attempt history is kept for a while).
    task: Task | None
    queue: Queue
    payload: Payload
    attempts: list[AttemptRow]
    #: The headers the next attempt sends (the one in flight, for a DISPATCHING task); empty if none.
    next_headers: list[tuple[str, str]]
    next_url: str
    next_method: str


class Pages:
    """Builds the data of each page; ``pacer`` gives a queue's live pacing (``None`` before dispatch)."""

    def __init__(self, service: TasksService, outcomes: OutcomeLog) -> None:
        self.service = service
        self.outcomes = outcomes

    def queue_row(self, queue: Queue, pacer: QueuePacer | None) -> QueueRow:
        """A queue's stats and chart at the service clock's now."""
        stats = queue_stats(self.service, self.outcomes, pacer, queue, self.service.clock.now())
        return QueueRow(queue, stats, bar_chart(stats.chart, CHART_BAR))

    def all_queues(self) -> list[Queue]:
        """Every queue of every project and location, by name."""
        return self.service.all_queues()

    def tasks(self, queue: Queue, state_filter: str, page_token: str) -> tuple[list[Task], str]:
        """One page of a queue's tasks: by name for all states, by schedule time for one state."""
        state = FILTERS[state_filter][1]
        if state is None:
            page = self.service.list_tasks(queue.name, PAGE_SIZE, page_token, include_exhausted=True)
        else:
            page = self.service.list_tasks_in_state(queue.name, state, PAGE_SIZE, page_token)
        return list(page.items), page.next_page_token

    def task(self, name: str) -> TaskDetail:
        """A task (exhausted ones included), its decoded body and its attempt history.

        A task that succeeded or was deleted is shown by its history while the runner keeps it.
        """
        history = self.service.attempts(name)
        try:
            task: Task | None = self.service.get_task(name, include_exhausted=True)
        except NotFound:
            if not history:
                raise
            task = None
        queue = self.service.get_queue(str(parse_task_name(name).queue))
        exchanges = self.outcomes.exchanges(name, len(history))
        rows = [
            AttemptRow(
                number,
                attempt,
                attempt.response_time - attempt.dispatch_time if attempt.response_time is not None else None,
                exchange.excerpt.decode("utf-8", errors="replace") if exchange else None,
                _short_names(exchange.sent) if exchange else [],
            )
            for number, (attempt, exchange) in enumerate(zip(history, exchanges, strict=True), start=1)
        ]
        headers: list[tuple[str, str]] = []
        url = method = ""
        upcoming = _next_attempt(task, self.service.clock.now()) if task is not None else None
        if upcoming is not None:
            request = build_request(upcoming, queue, None, self.service.clock.now())
            headers, url, method = sorted(request.headers.items()), request.url, request.method
        payload = decode_payload(task.http_request.body if task is not None else b"")
        return TaskDetail(name, task, queue, payload, rows, headers, url, method)


def _short_names(headers: Mapping[str, str]) -> list[tuple[str, str]]:
    """``X-CloudTasks-TaskRetryCount`` as ``RetryCount``: the attempt table's cells stay narrow."""
    prefix = "X-CloudTasks-"
    return [(key.removeprefix(prefix).removeprefix("Task"), value) for key, value in headers.items()]


def _next_attempt(task: Task, now: float) -> Task | None:
    """The task as its next attempt will be claimed (as it is, if one is in flight)."""
    if task.state is TaskState.DISPATCHING:
        return task
    if task.state is not TaskState.QUEUED:
        return None
    started = Attempt(schedule_time=task.schedule_time, dispatch_time=max(now, task.schedule_time))
    return dataclasses.replace(
        task,
        dispatch_count=task.dispatch_count + 1,
        last_attempt=started,
        first_attempt=task.first_attempt or started,
    )
