"""The Cloud Tasks operations on model objects: validation, defaults, names, tombstones.

The REST API and the CLI call these; the scheduler is told about changes through :class:`Listener`.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from local_runner import errors
from local_runner.clock import Clock
from local_runner.codec import format_timestamp
from local_runner.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from local_runner.model import (
    DEFAULT_DISPATCH_DEADLINE,
    MAX_SCHEDULE_AHEAD,
    MAX_TASK_BYTES,
    Attempt,
    NewTask,
    Queue,
    QueueState,
    Task,
    TaskState,
    estimated_task_bytes,
    parse_location,
    parse_queue_name,
    parse_task_name,
)
from local_runner.store.base import TaskStore

#: Default time a completed or deleted task's name stays blocked (reference §3: ~1 hour).
DEFAULT_TASK_TOMBSTONE = 3600.0
#: Default time a deleted queue's name stays blocked (reference §3: up to 7 days; short for development).
DEFAULT_QUEUE_TOMBSTONE = 60.0
USER_AGENT = "Google-Cloud-Tasks"


class Listener(Protocol):
    """What the service tells the dispatch side."""

    def queue_changed(self, queue_name: str) -> None:
        """A queue was created, updated, paused, resumed, purged or deleted, or got a new task."""

    def run_now(self, task: Task) -> None:
        """Dispatch this claimed task at once (RunTask)."""


class _NoListener:
    def queue_changed(self, queue_name: str) -> None:
        pass

    def run_now(self, task: Task) -> None:
        pass


@dataclass(frozen=True)
class Page:
    """One page of a list call."""

    items: Sequence[Task]
    next_page_token: str


class TasksService:
    """Queue and task operations with the real service's rules and messages."""

    def __init__(
        self,
        store: TaskStore,
        clock: Clock,
        task_tombstone: float = DEFAULT_TASK_TOMBSTONE,
        queue_tombstone: float = DEFAULT_QUEUE_TOMBSTONE,
    ) -> None:
        self.store = store
        self.clock = clock
        self.task_tombstone = task_tombstone
        self.queue_tombstone = queue_tombstone
        self.listener: Listener = _NoListener()

    # -- queues ----------------------------------------------------------------------------------

    def create_queue(self, parent: str, queue: Queue) -> Queue:
        """CreateQueue: the name must be new and not deleted too recently."""
        parse_location(parent)
        if parse_queue_name(queue.name).parent != parent:
            raise InvalidArgument(
                f"The queue name from request ('{queue.name}') must be under the parent ('{parent}')."
            )
        if self.store.get_queue(queue.name) is not None:
            raise AlreadyExists(errors.QUEUE_EXISTS)
        if self.store.queue_tombstoned(queue.name, self.clock.now()):
            raise FailedPrecondition(errors.QUEUE_TOMBSTONED)
        created = queue.replace(state=QueueState.RUNNING, purge_time=None)
        self.store.put_queue(created)
        self.listener.queue_changed(created.name)
        return created

    def upsert_queue(self, queue: Queue) -> Queue:
        """UpdateQueue without a mask: replace the configuration, keep state and purge time; create if absent."""
        existing = self.store.get_queue(queue.name)
        if existing is None:
            if self.store.queue_tombstoned(queue.name, self.clock.now()):
                raise FailedPrecondition(errors.QUEUE_TOMBSTONED)
            updated = queue.replace(state=QueueState.RUNNING, purge_time=None)
        else:
            updated = queue.replace(state=existing.state, purge_time=existing.purge_time)
        self.store.put_queue(updated)
        self.listener.queue_changed(updated.name)
        return updated

    def get_queue(self, name: str) -> Queue:
        """GetQueue."""
        queue = self.store.get_queue(str(parse_queue_name(name)))
        if queue is None:
            raise NotFound(errors.QUEUE_NOT_FOUND)
        return queue

    def list_queues(self, parent: str) -> list[Queue]:
        """ListQueues, in lexicographical order."""
        parse_location(parent)
        return self.store.list_queues(parent)

    def delete_queue(self, name: str) -> None:
        """DeleteQueue: deletes the queue and its tasks; the name is blocked for a while."""
        parse_queue_name(name)
        if not self.store.delete_queue(name, self.clock.now() + self.queue_tombstone):
            raise NotFound(errors.ENTITY_NOT_FOUND)
        self.listener.queue_changed(name)

    def _set_state(self, name: str, state: QueueState) -> Queue:
        queue = self.get_queue(name).replace(state=state)
        self.store.put_queue(queue)
        self.listener.queue_changed(name)
        return queue

    def pause_queue(self, name: str) -> Queue:
        """PauseQueue: tasks are still accepted but not dispatched."""
        return self._set_state(name, QueueState.PAUSED)

    def resume_queue(self, name: str) -> Queue:
        """ResumeQueue: from PAUSED or DISABLED back to RUNNING."""
        return self._set_state(name, QueueState.RUNNING)

    def purge_queue(self, name: str) -> Queue:
        """PurgeQueue: deletes every task created before now."""
        now = self.clock.now()
        queue = self.get_queue(name).replace(purge_time=now)
        self.store.put_queue(queue)
        self.store.purge(name, now, now + self.task_tombstone)
        self.listener.queue_changed(name)
        return queue

    # -- tasks -----------------------------------------------------------------------------------

    def create_task(self, parent: str, request: NewTask) -> Task:
        """CreateTask: validates name, schedule time, deadline and size, then queues the task."""
        queue_name = str(parse_queue_name(parent))
        now = self.clock.now()
        if request.name is not None:
            name = str(parse_task_name(request.name, parent=queue_name))
        else:
            name = f"{queue_name}/tasks/{secrets.randbelow(9 * 10**18) + 10**18}"
        self.get_queue(queue_name)
        schedule_time = now if request.schedule_time is None else max(request.schedule_time, now)
        if schedule_time > now + MAX_SCHEDULE_AHEAD:
            raise InvalidArgument(
                f"The Task.scheduleTime, {format_timestamp(schedule_time)}, is too far in the future. "
                "Schedule time must be no more than 720h in the future."
            )
        headers = dict(request.http_request.headers)
        for key in [k for k in headers if k.lower() == "user-agent"]:
            del headers[key]
        headers["User-Agent"] = USER_AGENT
        task = Task(
            name=name,
            http_request=dataclasses.replace(request.http_request, headers=headers),
            schedule_time=schedule_time,
            create_time=now,
            dispatch_deadline=(
                DEFAULT_DISPATCH_DEADLINE if request.dispatch_deadline is None else request.dispatch_deadline
            ),
            retry_config=request.retry_config,
        )
        size = estimated_task_bytes(task)
        if size > MAX_TASK_BYTES:
            raise InvalidArgument(
                f"Task size is {size} bytes; the maximum task size is {MAX_TASK_BYTES} bytes (1 MiB)."
            )
        self.store.insert_task(task, now)
        self.listener.queue_changed(queue_name)
        return task

    def get_task(self, name: str, include_exhausted: bool = False) -> Task:
        """GetTask: a completed, deleted or (in the real service) exhausted task is NOT_FOUND."""
        parse_task_name(name)
        task = self.store.get_task(name)
        if task is None or (task.state is TaskState.EXHAUSTED and not include_exhausted):
            if task is not None or self.store.task_tombstoned(name, self.clock.now()):
                raise NotFound(errors.TASK_GONE)
            raise NotFound(errors.ENTITY_NOT_FOUND)
        return task

    def list_tasks(
        self, queue_name: str, page_size: int = 1000, page_token: str = "", include_exhausted: bool = False
    ) -> Page:
        """ListTasks, ordered by name; the page token is the last name of the previous page."""
        self.get_queue(queue_name)
        if not 0 <= page_size <= 1000:
            raise InvalidArgument(f"page_size must be between 0 and 1000; got {page_size}.")
        size = page_size or 1000
        after = page_token or None
        if after is not None and not after.startswith(queue_name + "/tasks/"):
            raise InvalidArgument("Invalid page token.")
        items = self.store.list_tasks(queue_name, after, size + 1, include_exhausted)
        token = items[size - 1].name if len(items) > size else ""
        return Page(items[:size], token)

    def delete_task(self, name: str) -> None:
        """DeleteTask: the name is tombstoned like a completed task's."""
        parse_task_name(name)
        task = self.store.get_task(name)
        if task is None or task.state is TaskState.EXHAUSTED:
            raise NotFound(errors.ENTITY_NOT_FOUND)
        self.store.delete_task(name, self.clock.now() + self.task_tombstone)
        self.listener.queue_changed(task.queue_name)

    def run_task(self, name: str) -> Task:
        """RunTask: dispatch now, ignoring pause and rate limits; a task in flight is not sent twice."""
        parse_task_name(name)
        claimed = self.store.claim_task(name, self.clock.now())
        if claimed is not None:
            self.listener.run_now(claimed)
            return claimed
        task = self.store.get_task(name)
        if task is None or task.state is TaskState.EXHAUSTED:
            raise NotFound(errors.ENTITY_NOT_FOUND)
        return task

    def attempts(self, name: str) -> list[Attempt]:
        """The attempt history of a task (a runner extension)."""
        parse_task_name(name)
        return self.store.attempts(name)
