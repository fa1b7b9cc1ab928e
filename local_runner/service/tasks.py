"""The task lifecycle rules: CreateTask (names, schedule time, size), BufferTask, get, list, delete."""

from __future__ import annotations

import math
import random
import threading
from collections.abc import Sequence

from local_runner import errors
from local_runner.codec.scalars import format_timestamp
from local_runner.engine.delivery import USER_AGENT
from local_runner.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound
from local_runner.model import (
    DEFAULT_DISPATCH_DEADLINE,
    MAX_SCHEDULE_AHEAD,
    MAX_TASK_BYTES,
    HttpMethod,
    HttpRequest,
    NewTask,
    Task,
    TaskState,
    UriOverride,
    estimated_task_bytes,
    parse_queue_name,
    parse_task_name,
)
from local_runner.service.base import Page, ServiceBase
from local_runner.store.base import TaskCounts

#: Milliseconds an id's leading digits count before they wrap (about 285 years; ids keep 19 digits).
_ID_MILLISECONDS = 9 * 10**12


class _TaskIds:
    """Ids for tasks created without a name: 19 digits, like the service's (unique, not secret).

    The leading 13 digits count the milliseconds of the creation time and the last six start at a random
    point, so the tasks created together sit side by side in the store's name index (a commit of several
    new tasks writes one page of that index instead of one per task). Each id is above the one before, so
    two ids drawn by one process never collide, however many share a millisecond; a collision with an id
    stored by another process (a clock set back) is drawn again by the REST front.
    """

    def __init__(self) -> None:
        self._random = random.Random()
        self._last = 0
        self._lock = threading.Lock()

    def next(self, now: float) -> str:
        drawn = 10**18 + int(now * 1000) % _ID_MILLISECONDS * 10**6 + self._random.randrange(10**6)
        with self._lock:
            self._last = max(drawn, self._last + 1)
            return str(self._last)


generated_task_id = _TaskIds().next


class TaskLifecycle(ServiceBase):
    """The task operations of Cloud Tasks, with the real service's rules and messages."""

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
            name = f"{queue_name}/tasks/{generated_task_id(now)}"
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
            http_request=request.http_request.with_headers(headers),
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
    ) -> Page[Task]:
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
    ) -> Page[Task]:
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
