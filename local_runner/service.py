"""The Cloud Tasks operations on model objects: validation, defaults, names, tombstones.

The REST API and the CLI call these; the scheduler is told about changes through :class:`Listener`.
"""

from __future__ import annotations

import base64
import binascii
import copy
import dataclasses
import json
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from local_runner import errors
from local_runner.clock import Clock
from local_runner.codec.scalars import format_timestamp
from local_runner.engine.delivery import USER_AGENT
from local_runner.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from local_runner.model import (
    DEFAULT_DISPATCH_DEADLINE,
    MAX_SCHEDULE_AHEAD,
    MAX_TASK_BYTES,
    Attempt,
    HttpMethod,
    HttpRequest,
    NewTask,
    Queue,
    QueueState,
    Task,
    TaskState,
    UriOverride,
    estimated_task_bytes,
    parse_location,
    parse_queue_name,
    parse_task_name,
)
from local_runner.store.base import TaskCounts, TaskStore

#: Default time a completed, deleted or exhausted task's name stays blocked (reference §3: ~1 hour).
DEFAULT_TASK_TOMBSTONE = 3600.0
#: Default time a deleted queue's name stays blocked (reference §3: up to 7 days; short for development).
DEFAULT_QUEUE_TOMBSTONE = 60.0
#: The location ListLocations reports unless the embedding server sets ``TasksService.location_id``.
DEFAULT_LOCATION = "us-central1"
#: ListQueues' largest (and default) page size (reference §1).
MAX_QUEUE_PAGE_SIZE = 9800

#: Ids of tasks created without a name: 19 random digits, like the service's (unique, not secret).
_TASK_IDS = random.Random()


class Listener(Protocol):
    """What the service tells the dispatch side."""

    def queue_changed(self, queue_name: str) -> None:
        """A queue was created, updated, paused, resumed, purged or deleted, or got a new task."""

    def run_now(self, task: Task) -> None:
        """Dispatch this claimed task at once (RunTask)."""

    def queue_deleted(self, queue_name: str) -> None:
        """A queue was deleted (or everything was reset); the name may come back as a new queue."""


class _NoListener:
    def queue_changed(self, queue_name: str) -> None:
        pass

    def run_now(self, task: Task) -> None:
        pass

    def queue_deleted(self, queue_name: str) -> None:
        pass


@dataclass(frozen=True)
class Page:
    """One page of a list call."""

    items: Sequence[Task]
    next_page_token: str


@dataclass(frozen=True)
class QueuePage:
    """One page of ListQueues."""

    items: Sequence[Queue]
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
        #: The runner's location, as ListLocations reports it (queues may live in any location).
        self.location_id = DEFAULT_LOCATION

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
        """UpdateQueue without a mask: replace the configuration, keep state and purge time; create if new."""
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

    def all_queues(self) -> list[Queue]:
        """Every queue of every project and location, in lexicographical order (the console's list)."""
        return self.store.list_queues(None)

    def delete_queue(self, name: str) -> None:
        """DeleteQueue: deletes the queue and its tasks; the name is blocked for a while."""
        parse_queue_name(name)
        if not self.store.delete_queue(name, self.clock.now() + self.queue_tombstone):
            raise NotFound(errors.ENTITY_NOT_FOUND)
        self.listener.queue_deleted(name)
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
        task = self.new_task(parent, request)
        refused = self.add_tasks([task])[0]
        if refused is not None:
            raise refused
        return task

    def new_task(self, parent: str, request: NewTask) -> Task:
        """The task CreateTask would queue, validated (name, queue, schedule time, deadline, size).

        Nothing is stored: :meth:`add_tasks` queues it.
        """
        queue_name = str(parse_queue_name(parent))
        now = self.clock.now()
        if request.name is not None:
            name = str(parse_task_name(request.name, parent=queue_name))
        else:
            name = f"{queue_name}/tasks/{_TASK_IDS.randrange(10**18, 10**19)}"
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
        return task

    def add_tasks(self, tasks: Sequence[Task]) -> list[AlreadyExists | None]:
        """Queue tasks built by :meth:`new_task`, in one store transaction; one result per task.

        A task whose name is taken or tombstoned gets its ``AlreadyExists``; the others are queued.
        """
        refusals = self.store.insert_tasks(tasks, self.clock.now())
        for queue_name in dict.fromkeys(
            t.queue_name for t, r in zip(tasks, refusals, strict=True) if r is None
        ):
            self.listener.queue_changed(queue_name)
        return refusals

    def get_task(self, name: str, include_exhausted: bool = False) -> Task:
        """GetTask: a completed, deleted or exhausted task is NOT_FOUND (reference §4.2, §5.3).

        While the name's tombstone lasts the message says the task existed recently. An exhausted task
        is kept for the runner's extensions, which pass ``include_exhausted``.
        """
        parse_task_name(name)
        task = self.store.get_task(name)
        if task is None or (task.state is TaskState.EXHAUSTED and not include_exhausted):
            if self.store.task_tombstoned(name, self.clock.now()):
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

    def list_tasks_in_state(
        self, queue_name: str, state: TaskState, page_size: int = 100, page_token: str = ""
    ) -> Page:
        """Tasks of a queue in one state, earliest schedule time first (a runner extension).

        Indexed like dispatch itself, so a page costs the same in a queue of ten tasks or a million.
        The page token is ``<schedule time>/<uid>`` of the previous page's last task.
        """
        self.get_queue(queue_name)
        if not 1 <= page_size <= 1000:
            raise InvalidArgument(f"page_size must be between 1 and 1000; got {page_size}.")
        after = _decode_state_token(page_token) if page_token else None
        items = self.store.list_tasks_in_state(queue_name, state, after, page_size + 1)
        last = items[page_size - 1] if len(items) > page_size else None
        token = f"{last.schedule_time!r}/{last.uid}" if last is not None else ""
        return Page(items[:page_size], token)

    def task_counts(self, queue_name: str, cap: int) -> TaskCounts:
        """How many of the queue's tasks are due, scheduled later, in flight and exhausted, up to ``cap``."""
        return self.store.count_tasks_upto(self.get_queue(queue_name).name, self.clock.now(), cap)

    def next_schedule_time(self, queue_name: str) -> float | None:
        """The earliest schedule time among the queue's waiting tasks (due or not), or ``None``."""
        return self.store.next_schedule_time(self.get_queue(queue_name).name)

    def delete_task(self, name: str) -> None:
        """DeleteTask: the name is tombstoned like a completed task's; an exhausted task is NOT_FOUND."""
        queue_name = str(parse_task_name(name).queue)
        if not self.store.delete_task(name, self.clock.now() + self.task_tombstone):
            raise NotFound(errors.ENTITY_NOT_FOUND)
        self.listener.queue_changed(queue_name)

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

    def replay_task(self, name: str) -> Task:
        """Queue a task whose retries ran out again, with a fresh retry budget (a runner extension)."""
        parse_task_name(name)
        replayed = self.store.replay_exhausted(name, self.clock.now())
        if replayed is None:
            raise FailedPrecondition(
                f"Task {name} has not exhausted its retries; only such tasks can be replayed."
            )
        self.listener.queue_changed(replayed.queue_name)
        return replayed

    def reset(self) -> None:
        """Delete every queue, task, tombstone and attempt (a test aid)."""
        names = [queue.name for queue in self.store.list_queues(None)]
        self.store.reset()
        for name in names:
            self.listener.queue_deleted(name)
            self.listener.queue_changed(name)

    def is_idle(self, queue_name: str | None = None, within: float | None = None) -> bool:
        """Whether no attempt is in flight and no task is due (by now + ``within``; ever if ``None``).

        Exhausted tasks do not count. A test aid: wait for this instead of sleeping.
        """
        if queue_name is not None:
            names = [self.get_queue(queue_name).name]
        else:
            names = [queue.name for queue in self.store.list_queues(None)]
        horizon = None if within is None else self.clock.now() + within
        for name in names:
            if self.store.count_tasks(name)[TaskState.DISPATCHING.value]:
                return False
            due = self.store.next_schedule_time(name)
            if due is not None and (horizon is None or due <= horizon):
                return False
        return True

    def attempts(self, name: str) -> list[Attempt]:
        """The attempt history of a task (a runner extension)."""
        parse_task_name(name)
        return self.store.attempts(name)

    # -- extensions beyond the scheduler's needs: listing pages, BufferTask, IAM, locations ----------

    def list_queues_page(
        self, parent: str, filter_text: str = "", page_size: int = 0, page_token: str = ""
    ) -> QueuePage:
        """ListQueues with a ``state`` filter and pagination, in lexicographical order.

        Args:
            parent: ``projects/P/locations/L``.
            filter_text: ``""``, ``state:PAUSED``, ``state = RUNNING`` or ``state != PAUSED``.
            page_size: 0 for the maximum (9800).
            page_token: ``next_page_token`` of the previous page, asked with the same filter.
        """
        queues = self.list_queues(parent)
        keep = _queue_filter(filter_text)
        if not 0 <= page_size <= MAX_QUEUE_PAGE_SIZE:
            raise InvalidArgument(f"page_size must be between 0 and {MAX_QUEUE_PAGE_SIZE}; got {page_size}.")
        size = page_size or MAX_QUEUE_PAGE_SIZE
        after = _decode_queue_token(page_token, parent, filter_text) if page_token else None
        items = [q for q in queues if keep(q) and (after is None or q.name > after)]
        token = _encode_queue_token(filter_text, items[size - 1].name) if len(items) > size else ""
        return QueuePage(items[:size], token)

    def buffer_task(self, queue_name: str, task_id: str | None, body: bytes, content_type: str = "") -> Task:
        """BufferTask: a POST task to the queue's ``httpTarget.uriOverride`` carrying ``body``."""
        queue = self.get_queue(queue_name)
        target = queue.http_target
        override = target.uri_override if target is not None else None
        if override is None or not override.host:
            raise FailedPrecondition(
                "BufferTask requires queue-level routing: set the queue's httpTarget.uriOverride "
                "(with a host) before buffering tasks."
            )
        headers = {"Content-Type": content_type} if content_type else {}
        url = _override_url(override)
        request = HttpRequest(url=url, http_method=HttpMethod.POST, headers=headers, body=body)
        name = f"{queue.name}/tasks/{task_id}" if task_id is not None else None
        return self.create_task(queue.name, NewTask(http_request=request, name=name))

    def get_iam_policy(self, name: str) -> dict[str, Any]:
        """GetIamPolicy: the stored policy document (``{}`` if none was set)."""
        queue = self.get_queue(name)
        return self.store.get_iam_policy(queue.name) or {}

    def set_iam_policy(self, name: str, policy: dict[str, Any]) -> dict[str, Any]:
        """SetIamPolicy: store a validated policy (kept across restarts); the runner never enforces it."""
        queue = self.get_queue(name)
        if not self.store.put_iam_policy(queue.name, policy):  # deleted meanwhile
            raise NotFound(errors.QUEUE_NOT_FOUND)
        return copy.deepcopy(policy)

    def test_iam_permissions(self, name: str, permissions: Sequence[str]) -> list[str]:
        """TestIamPermissions: every permission is granted on an existing queue, none on a missing one."""
        queue_name = str(parse_queue_name(name))
        return list(permissions) if self.store.get_queue(queue_name) is not None else []

    def list_locations(self, project: str) -> list[str]:
        """ListLocations: the runner's one location in ``project``."""
        name = f"projects/{project}/locations/{self.location_id}"
        parse_location(name)
        return [name]

    def get_location(self, name: str) -> str:
        """GetLocation: any well-formed location (the runner accepts queues in every location)."""
        parse_location(name)
        return name


_FILTER_RE = re.compile(r"\s*state\s*(:|=|!=)\s*(\"?)([A-Za-z_]+|\d+)\2\s*")


def _queue_filter(text: str) -> Callable[[Queue], bool]:
    """The predicate of a ListQueues filter; only ``state`` comparisons are supported."""
    if not text.strip():
        return lambda queue: True
    match = _FILTER_RE.fullmatch(text)
    if match is None:
        raise InvalidArgument(
            f'Unsupported filter "{text}": the local runner supports "state:<STATE>", "state = <STATE>" '
            'and "state != <STATE>".'
        )
    operator, value = match.group(1), match.group(3)
    if value.isdigit() and int(value) in {s.value for s in QueueState}:
        state = QueueState(int(value))
    elif value.upper() in QueueState.__members__:
        state = QueueState[value.upper()]
    else:
        raise InvalidArgument(f'Invalid filter "{text}": unknown queue state "{value}".')
    if operator == "!=":
        return lambda queue: queue.state is not state
    return lambda queue: queue.state is state


def _encode_queue_token(filter_text: str, last_name: str) -> str:
    raw = json.dumps([filter_text, last_name]).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _decode_queue_token(token: str, parent: str, filter_text: str) -> str:
    try:
        decoded = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, RecursionError):
        raise InvalidArgument("Invalid page token.") from None
    if (
        not isinstance(decoded, list)
        or len(decoded) != 2
        or not all(isinstance(part, str) for part in decoded)
        or not decoded[1].startswith(parent + "/queues/")
    ):
        raise InvalidArgument("Invalid page token.")
    if decoded[0] != filter_text:
        raise InvalidArgument("The filter must not change between pages; ask for page 1 with the new filter.")
    return str(decoded[1])


def _decode_state_token(token: str) -> tuple[float, int]:
    schedule_time, _, uid = token.partition("/")
    try:
        key = (float(schedule_time), int(uid))
    except ValueError:
        raise InvalidArgument("Invalid page token.") from None
    if not math.isfinite(key[0]) or not 0 <= key[1] < 2**63:  # a store's ids are 64-bit
        raise InvalidArgument("Invalid page token.")
    return key


def _override_url(override: UriOverride) -> str:
    """The URL a BufferTask task targets, built from the queue's uriOverride."""
    scheme = "http" if override.scheme.upper() == "HTTP" else "https"
    netloc = f"{override.host}:{override.port}" if override.port else override.host
    path = override.path or "/"
    if not path.startswith("/"):
        path = "/" + path
    query = f"?{override.query}" if override.query else ""
    return f"{scheme}://{netloc}{path}{query}"
