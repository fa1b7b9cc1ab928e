"""Run coroutines on the event loop from other threads, with one wake-up of the loop per batch.

The gRPC server's handler threads hand each call to the loop that owns the service. Calls handed in
while the loop has not yet woken up for earlier ones ride on the same wake-up, so under load a burst of
calls costs one cross-thread signal instead of one each (``asyncio.run_coroutine_threadsafe`` signals
once per call).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

R = TypeVar("R")
#: How often a waiting thread checks that the loop is still there, in seconds.
_CHECK_LOOP_S = 1.0
#: Makes the coroutine to run on the loop.
Work = Callable[[], Coroutine[Any, Any, R]]


class LoopClosed(Exception):
    """The loop stopped taking work: the runner is shutting down."""


class LoopHop:
    """Hands coroutines from any thread to ``loop`` and their results back."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._waiting: list[
            tuple[Callable[[], Coroutine[Any, Any, Any]], concurrent.futures.Future[Any]]
        ] = []
        self._woken = False
        self._closed = False
        self._running: set[asyncio.Task[Any]] = set()

    def run(self, work: Work[R], timeout: float | None = None) -> R:
        """Run ``work()`` on the loop and wait for its result in this thread (not the loop's).

        Raises:
            LoopClosed: the hop was closed before the work could start, or the loop closed before it ended
                (so no thread waits forever on a loop that is gone, and the process can exit).
            TimeoutError: no result within ``timeout`` seconds.
        """
        future: concurrent.futures.Future[R] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise LoopClosed("the runner is shutting down")
            self._waiting.append((work, future))
            wake = not self._woken
            self._woken = True
        if wake:
            try:
                self._loop.call_soon_threadsafe(self._start_waiting)
            except RuntimeError:  # the loop is closed
                self._fail_waiting()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = _CHECK_LOOP_S if deadline is None else min(_CHECK_LOOP_S, deadline - time.monotonic())
            try:
                return future.result(max(0.0, wait))
            except TimeoutError:
                if self._loop.is_closed():
                    raise LoopClosed("the runner stopped") from None
                if deadline is not None and time.monotonic() >= deadline:
                    raise

    def close(self) -> None:
        """Refuse new work, fail the work not started yet and cancel the work still running.

        Call it on the loop's thread, once the calls in flight had their grace period.
        """
        with self._lock:
            self._closed = True
        self._fail_waiting()
        for task in list(self._running):
            task.cancel()  # its caller gets LoopClosed

    def _fail_waiting(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
        for _, future in waiting:
            future.set_exception(LoopClosed("the runner is shutting down"))

    def _start_waiting(self) -> None:
        with self._lock:
            waiting, self._waiting = self._waiting, []
            self._woken = False
        for work, future in waiting:
            try:
                coroutine = work()
            except Exception as error:  # the work failed before it became a coroutine
                future.set_exception(error)
                continue
            task = self._loop.create_task(coroutine)
            self._running.add(task)
            task.add_done_callback(functools.partial(self._finished, future))

    def _finished(self, future: concurrent.futures.Future[Any], task: asyncio.Task[Any]) -> None:
        self._running.discard(task)
        if task.cancelled():
            future.set_exception(LoopClosed("the runner is shutting down"))
        elif (error := task.exception()) is not None:
            future.set_exception(error)
        else:
            future.set_result(task.result())
