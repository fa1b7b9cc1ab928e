"""CreateTask calls that arrive together share one store transaction (one commit for many tasks)."""

from __future__ import annotations

from typing import Protocol

from local_runner.loop_batch import LoopBatch
from local_runner.model import Task
from local_runner.service import TasksService


class TaskInserts:
    """Queues the tasks of the CreateTask calls handled in the same turn of the event loop together.

    Each call still gets its own answer: its task, or its own ``AlreadyExists``; a store error fails
    every call of the transaction, and none of their tasks is stored.
    """

    def __init__(self, service: TasksService) -> None:
        # A StoreError, or a bug, fails every call of the batch: no retry.
        self._batch: LoopBatch[Task, None] = LoopBatch(service.add_tasks)

    async def add(self, task: Task) -> None:
        """Queue ``task`` with the others added in this turn of the loop; returns once it is stored."""
        await self._batch.add(task)


class Inserts(Protocol):
    """How CreateTask stores its task."""

    async def add(self, task: Task) -> None:
        """Store ``task``; raises its ``AlreadyExists`` if the name is taken."""
        ...


class DirectInserts:
    """Stores each task at once, in its own transaction, without suspending (for callers without a loop)."""

    def __init__(self, service: TasksService) -> None:
        self._service = service

    async def add(self, task: Task) -> None:
        """Store ``task`` now."""
        refused = self._service.add_tasks([task])[0]
        if refused is not None:
            raise refused
