"""The runner's only outbound HTTP: sends the requests :mod:`local_runner.engine.delivery` builds."""

from __future__ import annotations

import asyncio
import math

from local_runner.clock import Clock, SystemClock
from local_runner.engine.attempts import Failure, Outcome
from local_runner.engine.delivery import OutboundRequest, parse_retry_after
from local_runner.engine.slots import ConnectionLimits, ConnectionSlots, connection_limits
from local_runner.http_client import HttpClient, HttpError, Response, open_file_limit


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

    async def start(self) -> None:
        """Open the HTTP client (inside the running event loop)."""
        self._client = HttpClient(max_connections=self.limits.total)

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
        """:meth:`send` on the real clock: the event loop's own timer, no extra task per attempt."""
        timeout = asyncio.timeout(deadline)
        try:
            async with timeout:
                response = await self._exchange(request)
        except Exception as error:
            now = self.clock.now()
            if isinstance(error, TimeoutError) and timeout.expired():
                return Outcome(now, failure=Failure.DEADLINE, detail=f"deadline {deadline:g}s exceeded")
            return Outcome(now, failure=Failure.UNREACHABLE, detail=_describe(error, request.url))
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
