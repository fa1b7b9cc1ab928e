"""Clocks: the system clock, and a virtual one that tests advance instead of sleeping."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import Protocol


class Clock(Protocol):
    """Where the runner reads the time and waits for it."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        ...

    async def sleep_until(self, deadline: float | None, wake: asyncio.Event | None = None) -> None:
        """Return at ``deadline`` (never if ``None``) or as soon as ``wake`` is set."""
        ...


async def _wait_event(wake: asyncio.Event | None, timeout: float | None) -> None:
    if wake is None:
        if timeout is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(timeout)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), timeout)


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        """Seconds since the Unix epoch."""
        return time.time()

    async def sleep_until(self, deadline: float | None, wake: asyncio.Event | None = None) -> None:
        """Sleep on the event loop until ``deadline`` or ``wake``."""
        timeout = None if deadline is None else max(0.0, deadline - time.time())
        await _wait_event(wake, timeout)


class VirtualClock:
    """A clock that moves only when :meth:`advance` or :meth:`set` is called (from any thread).

    Sleepers on the runner's event loop wake up when virtual time reaches their deadline.
    """

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()
        self._loops: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}

    def now(self) -> float:
        """The current virtual time."""
        return self._now

    def advance(self, seconds: float) -> float:
        """Move time forward and wake every sleeper whose deadline has come."""
        if seconds < 0:
            raise ValueError("a clock cannot go backwards")
        return self.set(self._now + seconds)

    def set(self, instant: float) -> float:
        """Jump to ``instant`` (not earlier than now)."""
        with self._lock:
            if instant < self._now:
                raise ValueError("a clock cannot go backwards")
            self._now = instant
            loops = list(self._loops.items())
        for loop, ticked in loops:
            if not loop.is_closed():
                loop.call_soon_threadsafe(ticked.set)
        return instant

    async def sleep_until(self, deadline: float | None, wake: asyncio.Event | None = None) -> None:
        """Wait until virtual time reaches ``deadline`` or ``wake`` is set."""
        loop = asyncio.get_running_loop()
        with self._lock:
            ticked = self._loops.setdefault(loop, asyncio.Event())
        while deadline is None or self._now < deadline:
            if wake is not None and wake.is_set():
                return
            ticked.clear()
            waiters = [asyncio.ensure_future(ticked.wait())]
            if wake is not None:
                waiters.append(asyncio.ensure_future(wake.wait()))
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
