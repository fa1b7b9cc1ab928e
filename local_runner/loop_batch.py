"""Work handed in during one turn of the event loop, written in one call (one store transaction for many).

CreateTask calls (``api/task_inserts.py``) and attempt outcomes (``scheduler.py``) both use it; each passes
its own policy: how long to gather, and which write errors to wait out rather than hand to the callers.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Retry(Generic[T]):
    """A write refused with one of ``errors`` is tried again: its items wait, and their callers too."""

    errors: tuple[type[Exception], ...]
    #: Called for each item of a refused write, with the error and whether it is that item's first refusal.
    report: Callable[[T, Exception, bool], None]
    #: Waits before the next try, after the ``n``-th refusal in a row.
    pause: Callable[[int], Awaitable[None]]


def _settle_future(future: asyncio.Future[R], result: R | BaseException) -> None:
    if future.done():  # its caller went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class _Entry(Generic[T, R]):
    __slots__ = ("item", "refused", "settle")

    def __init__(self, item: T, settle: Callable[[R | BaseException], None]) -> None:
        self.item = item
        self.settle = settle
        self.refused = False


class LoopBatch(Generic[T, R]):
    """Gathers the items added while a write is pending and writes them together.

    Each :meth:`add` returns its own item's result; :meth:`put` hands it to a callback instead (no
    coroutine to wake up per item). ``write`` takes the items in the order they came and
    returns one result per item: a value, or an exception that only that item's caller gets. Another error
    of the write goes to every caller of the batch, unless ``retry`` names it: then the items are written
    again, with those added meanwhile.

    Args:
        write: Stores a batch (one transaction).
        gather_s: How long the first item waits for others, in seconds; 0 writes in the next turn of the loop.
        retry: Which refused writes to try again, and how.
    """

    def __init__(
        self,
        write: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        gather_s: float = 0.0,
        retry: Retry[T] | None = None,
    ) -> None:
        self._write = write
        self._gather_s = gather_s
        self._retry = retry
        self._waiting: list[_Entry[T, R]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, item: T) -> R:
        """Write ``item`` with the others of this turn of the loop; returns its result once written."""
        result: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.put(item, functools.partial(_settle_future, result))
        return await result

    def put(self, item: T, settle: Callable[[R | BaseException], None]) -> None:
        """Write ``item`` with the others of this turn of the loop; ``settle`` gets its result once written.

        ``settle`` runs inside the writer, one item after another: it must not raise.
        """
        self._waiting.append(_Entry(item, settle))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())

    @property
    def writer(self) -> asyncio.Task[None] | None:
        """The task writing the items put so far, while it runs (``None``: nothing is waiting)."""
        return self._writer if self._writer is not None and not self._writer.done() else None

    async def _drain(self) -> None:
        if self._gather_s > 0:
            await asyncio.sleep(self._gather_s)  # the loop's own time: a batching delay, not a schedule
        failures = 0
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                results = self._write([entry.item for entry in batch])
            except Exception as error:
                if self._retry is None or not isinstance(error, self._retry.errors):
                    for entry in batch:  # a bug, or an error the callers answer with
                        entry.settle(error)
                    continue
                failures += 1
                for entry in batch:
                    self._retry.report(entry.item, error, not entry.refused)
                    entry.refused = True
                self._waiting = batch + self._waiting
                await self._retry.pause(failures)
                continue
            failures = 0
            for entry, result in zip(batch, results, strict=True):
                entry.settle(result)
