"""What every part of the service shares: the store, the clock, the tombstone settings, the listener.

The scheduler is told about changes through :class:`Listener`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from local_runner import errors
from local_runner.clock import Clock
from local_runner.errors import NotFound
from local_runner.model import Queue, Task, parse_queue_name
from local_runner.store.base import TaskStore

T = TypeVar("T")

#: Default time a completed, deleted or exhausted task's name stays blocked (reference §3: ~1 hour).
DEFAULT_TASK_TOMBSTONE = 3600.0
#: Default time a deleted queue's name stays blocked (reference §3: up to 7 days; short for development).
DEFAULT_QUEUE_TOMBSTONE = 60.0
#: The location ListLocations reports unless the embedding server sets ``TasksService.location_id``.
DEFAULT_LOCATION = "us-central1"


class Listener(Protocol):
    """What the service tells the dispatch side."""

    def queue_changed(self, queue_name: str) -> None:
        """A queue was created, updated, paused, resumed, purged or deleted, or got a new task."""

    def run_now(self, task: Task) -> None:
        """Dispatch this claimed task at once (RunTask)."""

    def queue_deleted(self, queue_name: str) -> None:
        """A queue was deleted (or everything was reset); the name may come back as a new queue."""


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list call (ListQueues, ListTasks)."""

    items: Sequence[T]
    next_page_token: str


class _NoListener:
    def queue_changed(self, queue_name: str) -> None:
        pass

    def run_now(self, task: Task) -> None:
        pass

    def queue_deleted(self, queue_name: str) -> None:
        pass


class ServiceBase:
    """The state the service's parts share, and the queue lookup each of them needs."""

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

    def get_queue(self, name: str) -> Queue:
        """GetQueue."""
        queue = self.store.get_queue(str(parse_queue_name(name)))
        if queue is None:
            raise NotFound(errors.QUEUE_NOT_FOUND)
        return queue
