"""CreateTask calls that arrive together share one store transaction (one commit for many tasks)."""

from __future__ import annotations

import asyncio
from typing import Protocol

from local_runner.model import Task
from local_runner.service import TasksService


class TaskInserts:
    """Queues the tasks of the CreateTask calls handled in the same turn of the event loop together.

    Each call still gets its own answer: its task, or its own ``AlreadyExists``; a store error fails
    every call of the transaction, and none of their tasks is stored.
    """

    def __init__(self, service: TasksService) -> None:
        self._service = service
        self._waiting: list[tuple[Task, asyncio.Future[None]]] = []

    async def add(self, task: Task) -> None:
        """Queue ``task`` with the others added in this turn of the loop; returns once it is stored."""
        loop = asyncio.get_running_loop()
        stored: asyncio.Future[None] = loop.create_future()
        self._waiting.append((task, stored))
        if len(self._waiting) == 1:
            loop.call_soon(self._write)
        await stored

    def _write(self) -> None:
        batch, self._waiting = self._waiting, []
        try:
            refusals = self._service.add_tasks([task for task, _ in batch])
        except Exception as error:  # StoreError, or a bug: every call of the batch answers with it
            for _, stored in batch:
                if not stored.done():
                    stored.set_exception(error)
            return
        for (_, stored), refused in zip(batch, refusals, strict=True):
            if stored.done():
                continue
            if refused is None:
                stored.set_result(None)
            else:
                stored.set_exception(refused)


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
