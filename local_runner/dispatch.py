"""The runner's only outbound HTTP: sends the requests :mod:`local_runner.engine.delivery` builds."""

from __future__ import annotations

import asyncio
import math
from typing import Any

from local_runner.clock import Clock, SystemClock
from local_runner.engine.attempts import Failure, Outcome
from local_runner.engine.delivery import OutboundRequest, parse_retry_after
from local_runner.engine.slots import ConnectionLimits, ConnectionSlots, connection_limits
from local_runner.http_client import HttpClient, HttpError, Response, open_file_limit

#: Dispatch deadlines on the real clock end on shared timers, one per this many seconds: a deadline
#: passes at most this much late, never early (deadlines are 15 s to 30 min).
DEADLINE_TICK = 0.05


class _Deadline:
    """One attempt's deadline: the task it cancels when it passes, unless the attempt ended first."""

    __slots__ = ("cancelling", "expired", "task", "tick")

    def __init__(self, task: asyncio.Task[Any], tick: int) -> None:
        self.task = task
        self.tick = tick
        #: The task's cancellation requests before the deadline: a cancellation on top is the caller's.
        self.cancelling = task.cancelling()
        self.expired = False

    def passed(self) -> bool:
        """Whether a cancellation of the attempt was this deadline's alone (then the attempt goes on)."""
        return self.expired and self.task.uncancel() <= self.cancelling


class DeadlineTimers:
    """Deadlines of attempts in flight, grouped by the tick they end on: one loop timer per tick.

    ``asyncio.timeout`` costs a timer (a heap entry, then its cancellation) per attempt; at thousands
    of attempts a second, those ending in the same :data:`DEADLINE_TICK` share one, cancelled when the
    last of them ends.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float = DEADLINE_TICK) -> None:
        self._loop = loop
        self._tick = tick
        self._ticks: dict[int, tuple[set[_Deadline], asyncio.TimerHandle]] = {}

    def start(self, seconds: float) -> _Deadline:
        """Start a deadline of ``seconds`` for the current task; :meth:`end` it when the attempt ends."""
        loop = self._loop
        task = asyncio.current_task(loop)  # the loop given: Python 3.11 asks getpid() without it
        assert task is not None, "a deadline needs a running task"
        tick = math.ceil((loop.time() + seconds) / self._tick)
        deadline = _Deadline(task, tick)
        shared = self._ticks.get(tick)
        if shared is None:
            shared = self._ticks[tick] = (set(), loop.call_at(tick * self._tick, self._expire, tick))
        shared[0].add(deadline)
        return deadline

    @property
    def timers(self) -> int:
        """Loop timers set: one per tick with deadlines still running."""
        return len(self._ticks)

    def end(self, deadline: _Deadline) -> None:
        """The attempt ended (answered, failed or expired): its deadline no longer applies."""
        shared = self._ticks.get(deadline.tick)
        if shared is not None:
            pending, timer = shared
            pending.discard(deadline)
            if not pending:
                timer.cancel()
                del self._ticks[deadline.tick]

    def _expire(self, tick: int) -> None:
        pending, _ = self._ticks.pop(tick)
        for deadline in pending:
            deadline.expired = True
            deadline.task.cancel()


class Dispatcher:
    """Sends requests over keep-alive connections, within connection caps, with no thread per request.

    ``slots`` counts the requests sending at once; callers take a slot for a request's origin
    before :meth:`send` (the scheduler does so before it claims), so the deadline covers the exchange
    only. The HTTP client never holds more than ``limits.total`` sockets.
    """

    def __init__(self, clock: Clock, limits: ConnectionLimits | None = None) -> None:
        self.clock = clock
        self.limits = limits or connection_limits(open_file_limit())
        self.slots = ConnectionSlots(self.limits)
        self._client: HttpClient | None = None
        self._deadlines: DeadlineTimers | None = None

    async def start(self) -> None:
        """Open the HTTP client (inside the running event loop)."""
        self._client = HttpClient(max_connections=self.limits.total)
        self._deadlines = DeadlineTimers(asyncio.get_running_loop())

    async def close(self) -> None:
        """Close the HTTP client's idle connections."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _exchange(self, request: OutboundRequest) -> Response:
        assert self._client is not None, "Dispatcher.start() was not awaited"
        return await self._client.request(request.method, request.url, request.headers, request.body)

    async def send(self, request: OutboundRequest, deadline: float) -> Outcome:
        """Send one request; no response within ``deadline`` seconds is a DEADLINE failure."""
        if isinstance(self.clock, SystemClock):
            return await self._send_timed(request, deadline)
        started = self.clock.now()
        exchange = asyncio.ensure_future(self._exchange(request))
        timer = asyncio.ensure_future(self.clock.sleep_until(started + deadline))
        try:
            await asyncio.wait({exchange, timer}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            exchange.cancel()
            raise
        finally:
            timer.cancel()
        if not exchange.done():
            exchange.cancel()
            await asyncio.gather(exchange, return_exceptions=True)
            return Outcome(
                self.clock.now(), failure=Failure.DEADLINE, detail=f"deadline {deadline:g}s exceeded"
            )
        now = self.clock.now()
        error = exchange.exception()
        if error is not None:
            return Outcome(now, failure=Failure.UNREACHABLE, detail=_describe(error, request.url))
        return _answered(exchange.result(), now)

    async def _send_timed(self, request: OutboundRequest, deadline: float) -> Outcome:
        """:meth:`send` on the real clock: loop timers shared by attempts (:class:`DeadlineTimers`)."""
        deadlines = self._deadlines
        assert deadlines is not None, "Dispatcher.start() was not awaited"
        timer = deadlines.start(deadline)
        try:
            response = await self._exchange(request)
        except asyncio.CancelledError:
            if timer.passed():
                return Outcome(
                    self.clock.now(), failure=Failure.DEADLINE, detail=f"deadline {deadline:g}s exceeded"
                )
            raise
        except Exception as error:
            return Outcome(
                self.clock.now(), failure=Failure.UNREACHABLE, detail=_describe(error, request.url)
            )
        finally:
            deadlines.end(timer)
        return _answered(response, self.clock.now())


def _answered(response: Response, now: float) -> Outcome:
    retry_after = parse_retry_after(response.retry_after, now)
    return Outcome(now, http_status=response.status, retry_after=retry_after, excerpt=response.excerpt)


def _describe(error: BaseException, url: str) -> str:
    if isinstance(error, HttpError):
        return str(error)
    return f"request to {url} failed: {type(error).__name__}: {error}"


def format_latency(seconds: float) -> str:
    """A latency for log lines: ``12 ms`` or ``1.5 s``."""
    if seconds < 1:
        return f"{math.floor(seconds * 1000 + 0.5)} ms"
    return f"{seconds:.1f} s"
